//! Results: latency percentiles, a readable table, and JSON.

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// A histogram of microseconds, from 1 µs to 10 minutes.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Latency {
    pub fn from_micros(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// One scenario's results, printed as a table or as JSON.
pub struct Report {
    pub scenario: &'static str,
    rows: Vec<(String, Value)>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, name: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).expect("report values serialize");
        self.rows.push((name.to_owned(), value));
    }

    pub fn print(&self, json: bool) {
        if json {
            let mut object = Map::new();
            object.insert("scenario".into(), Value::from(self.scenario));
            for (name, value) in &self.rows {
                object.insert(name.clone(), value.clone());
            }
            println!("{}", Value::Object(object));
            return;
        }

        println!("{}", self.scenario);
        let width = self.rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, value) in &self.rows {
            match value {
                Value::Object(fields) => {
                    let text: Vec<String> = fields
                        .iter()
                        .map(|(key, value)| format!("{key}={}", plain(value)))
                        .collect();
                    println!("  {name:width$}  {}", text.join("  "));
                }
                other => println!("  {name:width$}  {}", plain(other)),
            }
        }
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => match number.as_f64() {
            Some(float) if number.is_f64() => format!("{float:.3}"),
            _ => number.to_string(),
        },
        other => other.to_string(),
    }
}
