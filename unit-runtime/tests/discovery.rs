//! mDNS discovery on this host: an advertised device is found by a browse, in process and through the
//! `discover` command, and is gone once its advertiser shut down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pepeunit_unit_runtime::discovery::{self, Advertisement, Device};
use uuid::Uuid;

fn advertisement(port: u16) -> Advertisement {
    let unit = Uuid::new_v4();
    Advertisement {
        unit,
        name: format!("test-device-{}", &unit.simple().to_string()[..8]),
        version: "0123abcd".into(),
        port,
    }
}

/// Browses until `unit` answers (multicast answers can take a moment); `None` after a few tries.
async fn find(unit: Uuid) -> Option<Device> {
    for _ in 0..4 {
        let devices = discovery::discover(Duration::from_secs(2)).await.unwrap();
        if let Some(device) = devices.into_iter().find(|d| d.unit == unit) {
            return Some(device);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertised_device_is_discovered_until_it_stops() {
    let ad = advertisement(4242);
    let advertiser = discovery::advertise(&ad).unwrap();
    let device = find(ad.unit)
        .await
        .expect("the advertised device answers a browse");
    assert_eq!(device.name, ad.name);
    assert_eq!(device.version, ad.version);
    assert_eq!(device.port, 4242);
    assert!(!device.addresses.is_empty(), "{device}");
    let line = device.to_string();
    assert!(
        line.contains(&ad.name) && line.contains(&ad.unit.to_string()) && line.contains(":4242"),
        "{line}"
    );

    advertiser.shutdown().await.unwrap();
    let devices = discovery::discover(Duration::from_secs(2)).await.unwrap();
    assert!(
        devices.iter().all(|d| d.unit != ad.unit),
        "still listed after shutdown: {devices:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_discover_command_lists_an_advertised_device() {
    let ad = advertisement(4343);
    let _advertiser = discovery::advertise(&ad).unwrap();
    let mut listed = String::new();
    for _ in 0..3 {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pepeunit-unit"))
            .args(["discover", "--seconds", "2"])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        listed = String::from_utf8(output.stdout).unwrap();
        if listed.contains(&ad.unit.to_string()) {
            break;
        }
    }
    let line = listed
        .lines()
        .find(|l| l.contains(&ad.unit.to_string()))
        .unwrap_or_else(|| panic!("not listed:\n{listed}"));
    assert!(line.contains(&ad.name) && line.contains(":4343"), "{line}");
}
