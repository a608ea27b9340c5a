//! Finding devices on the local network with mDNS / DNS-SD.
//!
//! A running agent advertises the service `_pepeunit._tcp.local.` with its unit name as the instance name
//! and TXT records `uuid`, `name` and `version`; `pepeunit-unit discover` browses for that service and lists
//! what answered. Both sides use the `mdns-sd` daemon, which joins the mDNS group on every interface,
//! loopback included, so a device and a browser on the same host find each other too.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The DNS-SD service type every Pepeunit device advertises.
pub const SERVICE_TYPE: &str = "_pepeunit._tcp.local.";

fn mdns(error: mdns_sd::Error) -> Error {
    Error::Discovery(error.to_string())
}

/// What a device announces about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub unit: Uuid,
    pub name: String,
    pub version: String,
    pub port: u16,
}

/// A device that answered a browse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub unit: Uuid,
    pub version: String,
    pub host: String,
    pub port: u16,
    pub addresses: Vec<IpAddr>,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\t{}\t{}\t{}:{}\t",
            self.name, self.unit, self.version, self.host, self.port
        )?;
        for (i, address) in self.addresses.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{address}")?;
        }
        Ok(())
    }
}

/// Keeps an advertisement on the network; dropping it says goodbye and stops the mDNS daemon.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Advertiser {
    /// The DNS-SD instance name, e.g. `kitchen-sensor._pepeunit._tcp.local.`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Withdraws the advertisement, waiting (briefly) until the goodbye packets went out.
    pub async fn shutdown(self) -> Result<()> {
        let status = self.daemon.unregister(&self.fullname).map_err(mdns)?;
        // The daemon answers from its own thread; waiting for it must not hold a runtime worker.
        tokio::task::spawn_blocking(move || status.recv_timeout(Duration::from_secs(2)))
            .await
            .map_err(|e| Error::Discovery(format!("unregister task failed: {e}")))?
            .map_err(|e| Error::Discovery(format!("no answer to unregister: {e}")))?;
        // Drop then stops the daemon; a second unregister of a gone name is harmless.
        Ok(())
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        // Commands run in order on the daemon thread, so the goodbye goes out before it stops. Errors
        // only mean the daemon is already gone.
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

/// Starts advertising `info` on every interface; keep the returned [`Advertiser`] alive as long as the
/// device should be found.
pub fn advertise(info: &Advertisement) -> Result<Advertiser> {
    let instance = if info.name.trim().is_empty() {
        info.unit.to_string()
    } else {
        info.name.clone()
    };
    let unit = info.unit.to_string();
    let properties = [
        ("uuid", unit.as_str()),
        ("name", info.name.as_str()),
        ("version", info.version.as_str()),
    ];
    // The host name must be unique on the link; the unit uuid is, whatever the machine is called.
    let host = format!("pepeunit-{}.local.", info.unit.simple());
    let service = ServiceInfo::new(
        SERVICE_TYPE,
        &instance,
        &host,
        "",
        info.port,
        &properties[..],
    )
    .map_err(mdns)?
    // Addresses follow the host's interfaces, as they come and go.
    .enable_addr_auto();
    let fullname = service.get_fullname().to_owned();
    let daemon = ServiceDaemon::new().map_err(mdns)?;
    if let Err(error) = daemon.register(service) {
        let _ = daemon.shutdown();
        return Err(mdns(error));
    }
    Ok(Advertiser { daemon, fullname })
}

/// Browses for `timeout` and returns every device that answered, by name.
pub async fn discover(timeout: Duration) -> Result<Vec<Device>> {
    let daemon = ServiceDaemon::new().map_err(mdns)?;
    let events = daemon.browse(SERVICE_TYPE).map_err(mdns)?;
    // The receiver blocks (the daemon runs on its own thread); listen on a blocking-pool thread.
    let found = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        let mut found = BTreeMap::new();
        while let Ok(event) = events.recv_deadline(deadline) {
            match event {
                ServiceEvent::ServiceResolved(service) => match device(&service) {
                    Some(device) => {
                        found.insert(service.fullname.clone(), device);
                    }
                    None => tracing::debug!(
                        fullname = %service.fullname,
                        "ignoring an answer without a unit uuid"
                    ),
                },
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    found.remove(&fullname);
                }
                _ => {}
            }
        }
        found
    })
    .await
    .map_err(|e| Error::Discovery(format!("browse task failed: {e}")))?;
    let _ = daemon.stop_browse(SERVICE_TYPE);
    let _ = daemon.shutdown();
    let mut devices: Vec<Device> = found.into_values().collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name).then(a.unit.cmp(&b.unit)));
    Ok(devices)
}

fn device(service: &mdns_sd::ResolvedService) -> Option<Device> {
    let unit = service.get_property_val_str("uuid")?.parse().ok()?;
    let instance = service
        .fullname
        .strip_suffix(SERVICE_TYPE)
        .map(|n| n.trim_end_matches('.'))
        .unwrap_or(&service.fullname);
    let mut addresses: Vec<IpAddr> = service
        .get_addresses()
        .iter()
        .map(|a| a.to_ip_addr())
        .collect();
    addresses.sort();
    Some(Device {
        name: service
            .get_property_val_str("name")
            .filter(|n| !n.is_empty())
            .unwrap_or(instance)
            .to_owned(),
        unit,
        version: service
            .get_property_val_str("version")
            .unwrap_or_default()
            .to_owned(),
        host: service.host.trim_end_matches('.').to_owned(),
        port: service.port,
        addresses,
    })
}
