//! A strict parser for the Prometheus text exposition format 0.0.4.
//!
//! It refuses what Prometheus itself would refuse or what would make a
//! scrape ambiguous: samples before their TYPE, a family split in two,
//! duplicate series, malformed names, labels or values, histograms whose
//! buckets are not cumulative or whose +Inf bucket differs from _count, and
//! a missing final newline.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the one series with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }
}

fn valid_name(name: &str, colon_ok: bool) -> bool {
    let mut chars = name.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon_ok && c == ':');
    match chars.next() {
        Some(c) if first_ok(c) => chars.all(|c| first_ok(c) || c.is_ascii_digit()),
        _ => false,
    }
}

fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram" || t == "summary") {
                return base;
            }
        }
    }
    name
}

pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("missing final newline".into());
    }
    let mut out = Exposition::default();
    let mut helps = BTreeSet::new();
    let mut finished_families = BTreeSet::new();
    let mut current_family: Option<String> = None;
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap_or("");
            let name = parts.next().ok_or_else(|| at("comment without a name".into()))?;
            let arg = parts.next().ok_or_else(|| at("comment without text".into()))?;
            match keyword {
                "HELP" if !helps.insert(name.to_string()) => {
                    return Err(at("second HELP".into()));
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(at("unknown type".into()));
                    }
                    if out.types.insert(name.to_string(), arg.to_string()).is_some() {
                        return Err(at("second TYPE".into()));
                    }
                    if finished_families.contains(name) || current_family.as_deref() == Some(name) {
                        return Err(at("TYPE after samples".into()));
                    }
                }
                _ => {}
            }
            if !valid_name(name, true) {
                return Err(at("bad metric name".into()));
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let family = family_of(&sample.name, &out.types).to_string();
        if !out.types.contains_key(&family) {
            return Err(at("sample without TYPE".into()));
        }
        if current_family.as_deref() != Some(family.as_str()) {
            if finished_families.contains(&family) {
                return Err(at("family split in two".into()));
            }
            if let Some(done) = current_family.replace(family.clone()) {
                finished_families.insert(done);
            }
        }
        let key = format!("{}{:?}", sample.name, sample.labels);
        if !series.insert(key) {
            return Err(at("duplicate series".into()));
        }
        out.samples.push(sample);
    }
    check_histograms(&out)?;
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let (name_end, labels, rest) = match line.find('{') {
        Some(brace) => {
            let close = line.rfind('}').ok_or("unclosed labels")?;
            (brace, parse_labels(&line[brace + 1..close])?, &line[close + 1..])
        }
        None => {
            let space = line.find(' ').ok_or("no value")?;
            (space, BTreeMap::new(), &line[space..])
        }
    };
    let name = &line[..name_end];
    if !valid_name(name, true) {
        return Err("bad metric name".into());
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value_text = fields.next().ok_or("no value")?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| "bad value")?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let eq = rest.find("=\"").ok_or("label without =\"")?;
        let name = &rest[..eq];
        if !valid_name(name, false) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break eq + 2 + i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.is_empty() {
            return Err("labels not separated by ','".into());
        }
    }
    Ok(labels)
}

fn check_histograms(out: &Exposition) -> Result<(), String> {
    for (family, kind) in &out.types {
        if kind != "histogram" {
            continue;
        }
        let bucket_name = format!("{family}_bucket");
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in out.samples.iter().filter(|s| s.name == bucket_name) {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").ok_or("bucket without le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| "bad le")?
            };
            groups.entry(format!("{labels:?}")).or_default().push((le, s.value));
        }
        for (labels, buckets) in groups {
            let sorted = buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
            if !sorted {
                return Err(format!("{family}{labels}: buckets not increasing and cumulative"));
            }
            let (last_le, inf_count) = *buckets.last().ok_or("no buckets")?;
            if last_le != f64::INFINITY {
                return Err(format!("{family}{labels}: no +Inf bucket"));
            }
            let count = out
                .samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels)
                .ok_or(format!("{family}{labels}: no _count"))?;
            if count.value != inf_count {
                return Err(format!(
                    "{family}{labels}: +Inf bucket {inf_count} != _count {}",
                    count.value
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn refuses_what_prometheus_refuses() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert!(parse(good).is_ok());
    let bad = [
        "a_total 1\n",
        "# TYPE a_total counter\na_total{x=\"1\"} 2",
        "# TYPE a_total counter\na_total{x=\"1\"} two\n",
        "# TYPE a_total counter\na_total{x=1} 2\n",
        "# TYPE a_total counter\na_total{x=\"1\"} 2\na_total{x=\"1\"} 3\n",
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"2\"} 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 3\nh_sum 0\n",
    ];
    for text in bad {
        assert!(parse(text).is_err(), "accepted {text:?}");
    }
}
