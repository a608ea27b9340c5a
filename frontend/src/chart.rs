//! The value chart's geometry: a series' points placed in an SVG box by time and value, and a range
//! dragged across the chart turned back into times (zoom). Plain arithmetic, tested on the host.

/// The chart's drawing box, in SVG units (the chart is drawn at this size, so mouse offsets are units).
pub const WIDTH: f64 = 600.0;
pub const HEIGHT: f64 = 180.0;
/// Room kept above and below the line.
const PAD: f64 = 8.0;
/// A drag narrower than this is a click, not a zoom.
const MIN_DRAG: f64 = 4.0;
/// The shortest range a zoom gives: two seconds (the finest step is one).
const MIN_RANGE_MS: f64 = 2_000.0;

/// A time range in milliseconds since the epoch, `from` before `to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub from_ms: f64,
    pub to_ms: f64,
}

impl Range {
    /// The `span_ms` before `now_ms`.
    pub fn last(span_ms: f64, now_ms: f64) -> Self {
        Self {
            from_ms: now_ms - span_ms,
            to_ms: now_ms,
        }
    }

    fn span(self) -> f64 {
        (self.to_ms - self.from_ms).max(1.0)
    }

    /// Where `time_ms` falls across the chart.
    pub fn x(self, time_ms: f64) -> f64 {
        (time_ms - self.from_ms) / self.span() * WIDTH
    }

    /// The time at `x` across the chart, clamped to the range.
    pub fn time(self, x: f64) -> f64 {
        self.from_ms + x.clamp(0.0, WIDTH) / WIDTH * self.span()
    }

    /// The part of this range between two x positions of a drag (either order); `None` for a click.
    pub fn zoom(self, x0: f64, x1: f64) -> Option<Self> {
        let (a, b) = (x0.min(x1), x0.max(x1));
        if b - a < MIN_DRAG {
            return None;
        }
        let (from_ms, mut to_ms) = (self.time(a), self.time(b));
        if to_ms - from_ms < MIN_RANGE_MS {
            to_ms = from_ms + MIN_RANGE_MS;
        }
        Some(Self { from_ms, to_ms })
    }
}

/// The picker's ranges ending now: name and length.
pub const PRESETS: [(&str, f64); 3] = [
    ("Last hour", 3_600_000.0),
    ("Last day", 86_400_000.0),
    ("Last week", 604_800_000.0),
];

/// A line through `points` (`(time_ms, value)`, oldest first) as SVG polyline points, with the lowest
/// and highest value; `None` without points.
pub fn polyline(points: &[(f64, f64)], range: Range) -> Option<(String, f64, f64)> {
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    let spread = if hi > lo { hi - lo } else { 1.0 };
    let y = |v: f64| {
        if hi > lo {
            HEIGHT - PAD - (v - lo) / spread * (HEIGHT - 2.0 * PAD)
        } else {
            HEIGHT / 2.0
        }
    };
    let line = points
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", range.x(t), y(v)))
        .collect::<Vec<_>>()
        .join(" ");
    Some((line, lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Range = Range {
        from_ms: 0.0,
        to_ms: 86_400_000.0,
    };

    #[test]
    fn points_fall_by_time_and_value() {
        let (line, lo, hi) =
            polyline(&[(0.0, 1.0), (43_200_000.0, 3.0), (86_400_000.0, 2.0)], DAY).unwrap();
        assert_eq!((lo, hi), (1.0, 3.0));
        assert_eq!(line, "0.0,172.0 300.0,8.0 600.0,90.0");
        assert!(polyline(&[], DAY).is_none());
        let (flat, _, _) = polyline(&[(0.0, 5.0), (86_400_000.0, 5.0)], DAY).unwrap();
        assert_eq!(flat, "0.0,90.0 600.0,90.0");
    }

    #[test]
    fn a_drag_zooms_into_its_part_of_the_range() {
        let zoomed = DAY.zoom(450.0, 150.0).unwrap();
        assert_eq!(
            zoomed,
            Range {
                from_ms: 21_600_000.0,
                to_ms: 64_800_000.0
            }
        );
        assert_eq!(DAY.zoom(100.0, 102.0), None, "a click");
        // Past the edges, the range's own ends.
        assert_eq!(DAY.zoom(-50.0, 900.0), Some(DAY));
        let tiny = Range {
            from_ms: 0.0,
            to_ms: 1_000.0,
        }
        .zoom(0.0, 300.0)
        .unwrap();
        assert_eq!(tiny.to_ms - tiny.from_ms, MIN_RANGE_MS);
    }
}
