//! A time chart as inline SVG: one or two series of values over a window of days, with events
//! (failures, anomalies) marked on the time axis. No script, no external asset: the chart is
//! readable with scripts off, and labelled for screen readers (`role="img"`, a title and a
//! description naming the figures).

use super::html::{esc, when};
use crate::policy::status::{human_bytes, human_secs};
use chrono::{DateTime, Utc};
use std::fmt::Write as _;

/// What the values measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes.
    Bytes,
    /// Seconds.
    Seconds,
}

impl Unit {
    /// A value in words.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Bytes => human_bytes(v.max(0.0) as u64),
            Unit::Seconds if v == 0.0 => "0s".into(),
            Unit::Seconds if v < 1.0 => format!("{v:.2}s"),
            Unit::Seconds if v < 10.0 => format!("{v:.1}s"),
            Unit::Seconds => human_secs(v as i64),
        }
    }
}

/// One line of the chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its name in the legend (also the `data-series` attribute).
    pub name: &'static str,
    /// Its points, oldest first.
    pub points: Vec<(DateTime<Utc>, f64)>,
}

/// What an event mark means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// A failed backup attempt or a failed verification.
    Failure,
    /// A backup whose size is an anomaly.
    Anomaly,
}

impl MarkKind {
    fn class(self) -> &'static str {
        match self {
            MarkKind::Failure => "failure",
            MarkKind::Anomaly => "anomaly",
        }
    }
}

/// An event on the time axis.
#[derive(Debug, Clone)]
pub struct Mark {
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub kind: MarkKind,
    /// In words (a tooltip).
    pub label: String,
}

/// A chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// A unique element id (letters, digits and dashes).
    pub id: String,
    /// Its heading.
    pub title: String,
    /// What the values measure.
    pub unit: Unit,
    /// The window.
    pub from: DateTime<Utc>,
    /// Its end (now).
    pub to: DateTime<Utc>,
    /// One or two series.
    pub series: Vec<Series>,
    /// Events.
    pub marks: Vec<Mark>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 28.0;
/// Above this many points a series is drawn as a line only (a dot per point would be noise).
const MAX_DOTS: usize = 60;

/// The smallest "round" number (1, 2 or 5 times a power of ten) at or above `v`.
pub fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|c| *c >= v).unwrap_or(10.0 * p)
}

impl Chart {
    /// Points inside the window with a finite, non-negative value (what storage says is untrusted).
    fn visible(&self, s: &Series) -> Vec<(DateTime<Utc>, f64)> {
        s.points
            .iter()
            .filter(|(t, v)| *t >= self.from && *t <= self.to && v.is_finite() && *v >= 0.0)
            .copied()
            .collect()
    }

    fn x(&self, t: DateTime<Utc>) -> f64 {
        let span = (self.to - self.from).num_seconds().max(1) as f64;
        let at = (t - self.from).num_seconds().clamp(0, span as i64) as f64;
        LEFT + at / span * (WIDTH - LEFT - RIGHT)
    }

    fn y(v: f64, top: f64) -> f64 {
        TOP + (1.0 - v / top) * (HEIGHT - TOP - BOTTOM)
    }

    /// What a screen reader says about the chart: each series' points and latest value, and the
    /// marks.
    fn description(&self, visible: &[Vec<(DateTime<Utc>, f64)>], marks: &[&Mark]) -> String {
        let mut desc = Vec::new();
        for (s, pts) in self.series.iter().zip(visible) {
            match pts.last() {
                Some((_, v)) => desc.push(format!("{}: {} points, latest {}", s.name, pts.len(), self.unit.format(*v))),
                None => desc.push(format!("{}: no data", s.name)),
            }
        }
        for (kind, words) in [(MarkKind::Failure, "failures"), (MarkKind::Anomaly, "anomalies")] {
            let n = marks.iter().filter(|m| m.kind == kind).count();
            if n > 0 {
                desc.push(format!("{n} {words} marked"));
            }
        }
        desc.join("; ")
    }

    /// The grid with its value labels, and the dates of the window's start, middle and end.
    fn axes(&self, o: &mut String, top: f64) {
        for i in 0..=4 {
            let v = top * f64::from(i) / 4.0;
            let gy = Self::y(v, top);
            let _ = write!(
                o,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{gy:.1}\" y2=\"{gy:.1}\"/><text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                gy + 4.0,
                esc(&self.unit.format(v))
            );
        }
        let mid = self.from + (self.to - self.from) / 2;
        for (t, anchor) in [(self.from, "start"), (mid, "middle"), (self.to, "end")] {
            let _ = write!(
                o,
                "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
                self.x(t),
                HEIGHT - 6.0,
                t.format("%b %d")
            );
        }
    }

    /// One series: a line through its points (with a dot per point when there are few), and its
    /// point count as `data-points`.
    fn line(&self, o: &mut String, n: usize, name: &str, pts: &[(DateTime<Utc>, f64)], top: f64) {
        let coords: Vec<String> = pts
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", self.x(*t), Self::y(*v, top)))
            .collect();
        let _ = write!(
            o,
            "<g class=\"series s{n}\" data-series=\"{}\" data-points=\"{}\"><polyline points=\"{}\"/>",
            esc(name),
            pts.len(),
            coords.join(" ")
        );
        if pts.len() <= MAX_DOTS {
            for (t, v) in pts {
                let _ = write!(
                    o,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\"><title>{}: {}</title></circle>",
                    self.x(*t),
                    Self::y(*v, top),
                    when(*t),
                    esc(&self.unit.format(*v))
                );
            }
        }
        o.push_str("</g>");
    }

    /// The legend: each series, and the kinds of marks shown.
    fn legend(&self, o: &mut String, marks: &[&Mark]) {
        o.push_str("<ul class=\"legend\">");
        for (n, s) in self.series.iter().enumerate() {
            let _ = write!(
                o,
                "<li><span class=\"key s{n}\" aria-hidden=\"true\">&nbsp;</span>{}</li>",
                esc(s.name)
            );
        }
        for (kind, words) in [(MarkKind::Failure, "failure"), (MarkKind::Anomaly, "size anomaly")] {
            if marks.iter().any(|m| m.kind == kind) {
                let _ = write!(
                    o,
                    "<li><span class=\"key {}\" aria-hidden=\"true\">&nbsp;</span>{words}</li>",
                    kind.class()
                );
            }
        }
        o.push_str("</ul>");
    }

    /// The chart as a `<figure>` holding the SVG and its legend.
    pub fn render(&self) -> String {
        let visible: Vec<Vec<(DateTime<Utc>, f64)>> = self.series.iter().map(|s| self.visible(s)).collect();
        let top = nice_ceiling(visible.iter().flatten().map(|(_, v)| *v).fold(0.0, f64::max));
        let marks: Vec<&Mark> = self.marks.iter().filter(|m| m.at >= self.from && m.at <= self.to).collect();
        let id = esc(&self.id);
        let mut o = String::new();
        let _ = write!(
            o,
            "<figure class=\"chart\" id=\"{id}\"><figcaption id=\"{id}-t\">{}</figcaption>\
             <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-labelledby=\"{id}-t {id}-d\">\
             <title>{}</title><desc id=\"{id}-d\">{}</desc>",
            esc(&self.title),
            esc(&self.title),
            esc(&self.description(&visible, &marks))
        );
        self.axes(&mut o, top);
        for m in &marks {
            let mx = self.x(m.at);
            let _ = write!(
                o,
                "<line class=\"mark {}\" x1=\"{mx:.1}\" x2=\"{mx:.1}\" y1=\"{TOP}\" y2=\"{}\"><title>{}</title></line>",
                m.kind.class(),
                HEIGHT - BOTTOM,
                esc(&m.label)
            );
        }
        for (n, (s, pts)) in self.series.iter().zip(&visible).enumerate() {
            self.line(&mut o, n, s.name, pts, top);
        }
        if visible.iter().all(Vec::is_empty) {
            let _ = write!(
                o,
                "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no data in this window</text>",
                (LEFT + WIDTH - RIGHT) / 2.0,
                HEIGHT / 2.0
            );
        }
        o.push_str("</svg>");
        self.legend(&mut o, &marks);
        o.push_str("</figure>");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).unwrap()
    }

    #[test]
    fn nice_ceilings() {
        for (v, want) in [
            (0.0, 1.0),
            (-3.0, 1.0),
            (f64::NAN, 1.0),
            (0.7, 1.0),
            (1.0, 1.0),
            (1.2, 2.0),
            (3.0, 5.0),
            (7.0, 10.0),
            (1234.0, 2000.0),
        ] {
            assert_eq!(nice_ceiling(v), want, "{v}");
        }
    }

    #[test]
    fn untrusted_points_outside_the_window_or_not_finite_are_left_out_and_names_escaped() {
        let c = Chart {
            id: "c1".into(),
            title: "Backup size <b>".into(),
            unit: Unit::Bytes,
            from: at(1),
            to: at(30),
            series: vec![Series {
                name: "compressed",
                points: vec![(at(2), 10.0), (at(3), f64::NAN), (at(4), -1.0), (at(5), 1e300), (at(20), 30.0)],
            }],
            marks: vec![Mark {
                at: at(10),
                kind: MarkKind::Failure,
                label: "<script>alert(1)</script>".into(),
            }],
        };
        let svg = c.render();
        assert!(svg.contains("data-points=\"3\""), "{svg}");
        assert!(!svg.contains("<script>") && !svg.contains("<b>"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg.matches("class=\"mark failure\"").count(), 1);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn a_long_series_is_a_line_without_dots() {
        let from = at(1);
        let points: Vec<_> = (0..500).map(|i| (from + chrono::Duration::hours(i), 5.0)).collect();
        let c = Chart {
            id: "c2".into(),
            title: "t".into(),
            unit: Unit::Seconds,
            from,
            to: at(30),
            series: vec![Series { name: "duration", points }],
            marks: vec![],
        };
        let svg = c.render();
        assert!(svg.contains("data-points=\"500\""));
        assert_eq!(svg.matches("<circle").count(), 0);
        assert_eq!(
            svg.split("points=\"").nth(2).unwrap().split('"').next().unwrap().split(' ').count(),
            500
        );
    }
}
