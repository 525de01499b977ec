//! The small pieces every page shares: escaping (every name, key and reason on a page came from
//! storage or a database and is untrusted), time formatting, and the style sheet with its colours,
//! whose contrast is tested against WCAG's 4.5:1 for text.

use chrono::{DateTime, Utc};

/// Text made safe for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // Control characters have no business on a page (and some are not valid HTML);
            // direction overrides and invisible characters could make a name read as another.
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{FFFD}'),
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

/// A link to a docs section (`target`: `file#anchor`, one of
/// [`super::page::DOC_LINKS`]) under `docs`; with no `docs` (a page written to a file, which may be
/// read anywhere), the section named in words.
pub fn doc_link(docs: &str, target: &str, text: &str) -> String {
    if docs.is_empty() {
        let file = target.split('#').next().unwrap_or(target);
        format!("{text} (docs/{file})")
    } else {
        format!("<a href=\"{docs}{target}\">{text}</a>")
    }
}

/// `2026-12-03 21:00 UTC`
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Text on the page's background, and the colours used for text and marks: (name, foreground,
/// background). Each pair is checked for contrast.
pub const PALETTE: &[(&str, &str, &str)] = &[
    ("text", "#1b1b1b", "#ffffff"),
    ("muted", "#555555", "#ffffff"),
    ("link", "#0b57a4", "#ffffff"),
    ("healthy", "#0d5323", "#e6f4ea"),
    ("warning", "#6b3a00", "#fff1dc"),
    ("failing", "#8a1020", "#fde7e9"),
    ("series-0", "#0b57a4", "#ffffff"),
    ("series-1", "#a34700", "#ffffff"),
    ("failure", "#b00020", "#ffffff"),
    ("anomaly", "#6b4f00", "#ffffff"),
];

fn colour(name: &str) -> (&'static str, &'static str) {
    PALETTE
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or(("#000000", "#ffffff"), |(_, f, b)| (*f, *b))
}

/// The page's style sheet (inline: the page loads nothing).
pub fn style() -> String {
    let (text, bg) = colour("text");
    let (muted, _) = colour("muted");
    let (link, _) = colour("link");
    let (s0, _) = colour("series-0");
    let (s1, _) = colour("series-1");
    let (fail, _) = colour("failure");
    let (anom, _) = colour("anomaly");
    let badge = |n: &str| {
        let (f, b) = colour(n);
        format!(".badge.{n}{{color:{f};background:{b};border:1px solid {f}}}.problems.{n} li{{border-left:4px solid {f}}}")
    };
    format!(
        "body{{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:{text};background:{bg};margin:0 auto;max-width:70rem;padding:0 1rem 2rem;line-height:1.45}}\
         a{{color:{link}}}h1{{font-size:1.5rem;margin:1rem 0 0}}h2{{font-size:1.25rem;margin:2rem 0 .5rem;border-bottom:1px solid #ccc}}h3{{font-size:1.05rem;margin:1.25rem 0 .5rem}}\
         .muted{{color:{muted}}}.badge{{display:inline-block;padding:0 .5rem;border-radius:.75rem;font-size:.9rem;font-weight:600;vertical-align:middle}}\
         {}{}{}\
         .problems{{list-style:none;padding:0}}.problems li{{padding:.25rem .5rem;margin:.25rem 0;overflow-wrap:anywhere}}\
         dl.facts{{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}}dl.facts dt{{font-weight:600}}dl.facts dd{{margin:0;overflow-wrap:anywhere}}\
         table{{border-collapse:collapse;width:100%;font-size:.9rem}}th,td{{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}}td{{overflow-wrap:break-word}}.runs td:first-child{{white-space:nowrap}}.runs td:last-child{{overflow-wrap:anywhere}}\
         .scroll{{overflow-x:auto}}\
         .charts{{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,30rem),1fr));gap:1rem}}\
         figure.chart{{margin:0}}figure.chart svg{{width:100%;height:auto;display:block}}figcaption{{font-weight:600}}\
         .grid{{stroke:#e2e2e2;stroke-width:1}}.axis{{font-size:15px;fill:{muted}}}.empty{{font-size:16px;fill:{muted}}}\
         .series polyline{{fill:none;stroke-width:2.5}}.s0 polyline{{stroke:{s0}}}.s0 circle{{fill:{s0}}}.s1 polyline{{stroke:{s1};stroke-dasharray:6 3}}.s1 circle{{fill:{s1}}}\
         .mark{{stroke-width:2}}.mark.failure{{stroke:{fail}}}.mark.anomaly{{stroke:{anom};stroke-dasharray:3 3}}\
         .legend{{list-style:none;padding:0;margin:.25rem 0;font-size:.85rem;display:flex;flex-wrap:wrap;gap:.25rem 1rem}}\
         .key{{display:inline-block;width:1.5rem;height:0;overflow:hidden;border-top:3px solid;margin-right:.35rem;vertical-align:middle}}\
         .key.s0{{border-color:{s0}}}.key.s1{{border-color:{s1};border-top-style:dashed}}.key.failure{{border-color:{fail}}}.key.anomaly{{border-color:{anom};border-top-style:dotted}}\
         details{{margin:1rem 0}}summary{{cursor:pointer;font-weight:600}}",
        badge("healthy"),
        badge("warning"),
        badge("failing"),
    )
}

/// WCAG 2 contrast ratio of two `#rrggbb` colours.
#[cfg(test)]
fn contrast(a: &str, b: &str) -> f64 {
    fn luminance(hex: &str) -> f64 {
        let channel = |i: usize| {
            let v = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0)) / 255.0;
            if v <= 0.039_28 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
    }
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_colour_pair_meets_the_text_contrast_of_wcag_aa() {
        for (name, fg, bg) in PALETTE {
            let ratio = contrast(fg, bg);
            assert!(ratio >= 4.5, "{name}: {fg} on {bg} is {ratio:.2}:1");
        }
        assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 0.01);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>\u{7}"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;\u{FFFD}"
        );
        assert_eq!(esc("app\u{202E}lmth.exe"), "app\u{FFFD}lmth.exe");
    }
}
