//! A variable's value chart: its `series` over a range picked (last hour, day, week, or from–to), drawn
//! as an SVG line; dragging across the chart zooms into that part. The server downsamples, so a week of
//! samples arrives as at most [`POINTS`] points.

use dioxus::prelude::*;
use serde_json::json;

use crate::api::{gql, queries};
use crate::chart::{HEIGHT, PRESETS, Range, WIDTH, polyline};

/// Points asked for: one per two units of the chart's width.
const POINTS: u32 = 300;

fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn iso(ms: f64) -> String {
    String::from(js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms)).to_iso_string())
}

/// A short local date and time for the chart's edges.
fn label(ms: f64) -> String {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms));
    format!(
        "{:02}-{:02} {:02}:{:02}:{:02}",
        date.get_month() + 1,
        date.get_date(),
        date.get_hours(),
        date.get_minutes(),
        date.get_seconds()
    )
}

/// A `datetime-local` input's value (local time), as milliseconds since the epoch.
fn local_ms(text: &str) -> Option<f64> {
    let ms = js_sys::Date::parse(text);
    ms.is_finite().then_some(ms)
}

/// Where a pointer at `client_x` is across the chart, in chart units (the chart may be drawn narrower).
fn chart_x(client_x: f64) -> Option<f64> {
    let rect = web_sys::window()?
        .document()?
        .get_element_by_id("series-chart")?
        .get_bounding_client_rect();
    (rect.width() > 0.0).then(|| (client_x - rect.left()) / rect.width() * WIDTH)
}

#[component]
pub fn SeriesChart(uuid: String) -> Element {
    let mut range = use_signal(|| Range::last(PRESETS[1].1, now_ms()));
    let mut custom_from = use_signal(String::new);
    let mut custom_to = use_signal(String::new);
    let mut drag = use_signal(|| None::<(f64, f64)>);
    let series = use_resource(move || {
        let uuid = uuid.clone();
        let r = range();
        async move {
            gql(
                queries::NODE_SERIES,
                json!({
                    "uuid": uuid,
                    "from": iso(r.from_ms),
                    "to": iso(r.to_ms),
                    "maxPoints": POINTS,
                }),
            )
            .await
        }
    });
    let r = range();
    let (points, step, error) = match &*series.read() {
        Some(Ok(data)) => {
            let points: Vec<(f64, f64)> = data["series"]["points"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|p| {
                    Some((
                        js_sys::Date::parse(p["time"].as_str()?),
                        p["value"].as_f64()?,
                    ))
                })
                .collect();
            (points, data["series"]["stepSeconds"].as_i64(), None)
        }
        Some(Err(e)) => (Vec::new(), None, Some(e.message.clone())),
        None => (Vec::new(), None, None),
    };
    let line = polyline(&points, r);
    let count = points.len();
    let selection = drag().map(|(a, b)| (a.min(b), (a - b).abs()));
    let custom = move |e: FormEvent| {
        e.prevent_default();
        if let (Some(from_ms), Some(to_ms)) = (local_ms(&custom_from()), local_ms(&custom_to()))
            && from_ms < to_ms
        {
            range.set(Range { from_ms, to_ms });
        }
    };
    rsx! {
        div { class: "series",
            div { class: "actions wrap", role: "group", "aria-label": "Chart range",
                for (name , span) in PRESETS {
                    button { r#type: "button", onclick: move |_| range.set(Range::last(span, now_ms())), "{name}" }
                }
            }
            form { class: "range-form", onsubmit: custom,
                label { "From " input { r#type: "datetime-local", name: "from", value: "{custom_from}", oninput: move |e| custom_from.set(e.value()) } }
                label { " to " input { r#type: "datetime-local", name: "to", value: "{custom_to}", oninput: move |e| custom_to.set(e.value()) } }
                button { r#type: "submit", "Show" }
            }
            svg {
                id: "series-chart",
                class: "chart",
                width: "{WIDTH}",
                height: "{HEIGHT}",
                view_box: "0 0 {WIDTH} {HEIGHT}",
                role: "img",
                "aria-label": "Values from {label(r.from_ms)} to {label(r.to_ms)}",
                onpointerdown: move |e: PointerEvent| {
                    if let Some(x) = chart_x(e.client_coordinates().x) {
                        drag.set(Some((x, x)));
                    }
                },
                onpointermove: move |e: PointerEvent| {
                    if let (Some((start, _)), Some(x)) = (drag(), chart_x(e.client_coordinates().x)) {
                        drag.set(Some((start, x)));
                    }
                },
                onpointerup: move |_| {
                    if let Some((a, b)) = drag.replace(None)
                        && let Some(zoomed) = range().zoom(a, b)
                    {
                        range.set(zoomed);
                    }
                },
                onpointerleave: move |_| drag.set(None),
                if let Some((path, _, _)) = &line {
                    polyline { points: "{path}" }
                }
                if let Some((x, w)) = selection {
                    rect { class: "selection", x: "{x}", y: "0", width: "{w}", height: "{HEIGHT}" }
                }
            }
            p { class: "muted chart-legend", id: "series-legend",
                "{label(r.from_ms)} – {label(r.to_ms)}"
                if let Some((_, lo, hi)) = &line {
                    " · {count} points from {lo} to {hi}"
                }
                if let Some(step) = step {
                    " · step {step} s"
                }
                " · drag across the chart to zoom"
            }
            if line.is_none() {
                p { class: "muted", if let Some(e) = error { "{e}" } else { "No numeric values in this range." } }
            }
        }
    }
}
