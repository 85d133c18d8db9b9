//! The built-in traffic simulator of the embedded mode: realistic usage, invoice and
//! control traffic for a program of partners, a few of which misbehave (error storms,
//! auth-failure spikes, chargebacks) so enforcement has something to act on.
//!
//! Traffic is skewed like real programs: a few partners carry most requests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::json;

use crate::app::Health;
use crate::config::SimulatorConfig;
use crate::kafka::topics::TopicMap;

const TIERS: [&str; 4] = ["bronze", "silver", "gold", "platinum"];
const CURRENCIES: [&str; 3] = ["USD", "EUR", "JPY"];

pub struct Simulator {
    config: SimulatorConfig,
    topics: TopicMap,
    /// Cumulative traffic weights (Zipf-like), for picking a partner by share of traffic.
    cumulative: Vec<f64>,
    /// The daemon's: once it is stopping, a send waiting on a full queue gives up (the
    /// traffic is made up), so the thread ends within the grace.
    health: Arc<Health>,
}

impl Simulator {
    pub fn new(config: SimulatorConfig, topics: TopicMap, _partitions: i32) -> Self {
        let mut acc = 0.0;
        let cumulative = (0..config.partners.max(1))
            .map(|rank| {
                acc += 1.0 / ((rank + 1) as f64).powf(0.9);
                acc
            })
            .collect();
        Simulator {
            config,
            topics,
            cumulative,
            health: Arc::default(),
        }
    }

    fn partner_id(i: usize) -> String {
        format!("p-{i:05}")
    }

    /// Starts producing on its own thread until the daemon stops.
    pub fn spawn(mut self, base: ClientConfig, health: Arc<Health>) -> Option<JoinHandle<()>> {
        self.health = Arc::clone(&health);
        let mut c = base;
        c.set("linger.ms", "20")
            .set("partitioner", "murmur2_random");
        let producer: BaseProducer = match c.create() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "simulator: cannot create producer");
                return None;
            }
        };
        std::thread::Builder::new()
            .name("warden-simulator".into())
            .spawn(move || self.run(producer, &health))
            .ok()
    }

    fn run(self, producer: BaseProducer, health: &Health) {
        let mut rng = StdRng::seed_from_u64(self.config.seed);
        let n = self.config.partners.max(1);
        let misbehaving: Vec<bool> = (0..n)
            .map(|_| rng.gen_bool(self.config.misbehaving_fraction))
            .collect();
        self.send_program(&producer, &mut rng, n);
        let per_tick = (self.config.events_per_second as f64 / 50.0).max(1.0);
        let mut carry = 0.0;
        let mut seq: u64 = 0;
        let mut paid: Vec<(usize, String)> = Vec::new();
        tracing::info!(
            partners = n,
            rate = self.config.events_per_second,
            "simulator producing"
        );
        while !health.stopping.load(Ordering::SeqCst) {
            let tick = Instant::now();
            carry += per_tick;
            while carry >= 1.0 {
                carry -= 1.0;
                seq += 1;
                let i = self.pick(&mut rng);
                if rng.gen_bool(self.config.invoice_fraction) {
                    self.send_invoice(&producer, &mut rng, i, seq, misbehaving[i], &mut paid);
                } else if rng.gen_bool(0.001) {
                    // The odd broken integration: a record the decoder must dead-letter.
                    let id = Self::partner_id(i);
                    let bad = format!("{{\"event_id\":\"bad-{seq}\",\"partner_id\":\"{id}\",\"requests\":\"many\"}}");
                    self.send(&producer, &self.topics.usage, &id, bad);
                } else {
                    self.send_usage(&producer, &mut rng, i, seq, misbehaving[i]);
                }
            }
            producer.poll(Duration::ZERO);
            let spent = tick.elapsed();
            if spent < Duration::from_millis(20) {
                std::thread::sleep(Duration::from_millis(20) - spent);
            }
        }
        let _ = producer.flush(Duration::from_secs(2));
    }

    fn pick(&self, rng: &mut StdRng) -> usize {
        // unwrap: `cumulative` has at least one element.
        let total = *self.cumulative.last().unwrap();
        let x = rng.gen_range(0.0..total);
        self.cumulative
            .partition_point(|c| *c < x)
            .min(self.cumulative.len() - 1)
    }

    fn send(&self, producer: &BaseProducer, topic: &str, key: &str, value: String) {
        let mut record = BaseRecord::to(topic).key(key).payload(&value);
        // A full local queue: serve deliveries and retry, never drop silently.
        loop {
            match producer.send(record) {
                Ok(()) => return,
                Err(_) if self.health.stopping.load(Ordering::SeqCst) => return,
                Err((e, r)) => {
                    tracing::debug!(error = %e, "simulator: producer queue full");
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
            }
        }
    }

    fn send_program(&self, producer: &BaseProducer, rng: &mut StdRng, n: usize) {
        let now = Utc::now();
        for (currency, rate) in [("EUR", "1.08"), ("JPY", "0.0067")] {
            let fact = json!({"type": "fx_rate", "currency": currency, "usd_per_unit": rate, "as_of": now - chrono::Duration::days(1)});
            self.send(producer, &self.topics.control, currency, fact.to_string());
        }
        for i in 0..n {
            let id = Self::partner_id(i);
            // The biggest partners sit higher in the program; a few resell under a distributor.
            let tier = TIERS[(3usize.saturating_sub(i * 4 / n.max(1))).min(3)];
            let parent =
                (i >= 10 && rng.gen_bool(0.2)).then(|| Self::partner_id(rng.gen_range(0..10)));
            let fact = json!({
                "type": "partner", "partner_id": id, "name": format!("Partner {i}"), "tier": tier,
                "tier_effective_from": now - chrono::Duration::days(90), "parent_id": parent,
            });
            self.send(producer, &self.topics.control, &id, fact.to_string());
        }
    }

    fn send_usage(&self, producer: &BaseProducer, rng: &mut StdRng, i: usize, seq: u64, bad: bool) {
        let id = Self::partner_id(i);
        let requests: u64 = rng.gen_range(1..=20);
        let error_share = if bad { 0.35 } else { 0.01 };
        let errors =
            (requests as f64 * error_share * rng.gen_range(0.5..1.5)).min(requests as f64) as u64;
        let auth_failures = if bad && rng.gen_bool(0.3) {
            rng.gen_range(5..50)
        } else {
            0
        };
        let event = json!({
            "event_id": format!("sim-{seq}"), "ts": Utc::now(), "partner_id": id,
            "integration_id": format!("{id}-int-{}", rng.gen_range(0..3)),
            "tenant_id": format!("{id}-t-{}", rng.gen_range(0..20)),
            "requests": requests, "errors": errors, "auth_failures": auth_failures,
            "bytes": requests * rng.gen_range(200..4000),
        });
        self.send(producer, &self.topics.usage, &id, event.to_string());
    }

    fn send_invoice(
        &self,
        producer: &BaseProducer,
        rng: &mut StdRng,
        i: usize,
        seq: u64,
        bad: bool,
        paid: &mut Vec<(usize, String)>,
    ) {
        let id = Self::partner_id(i);
        let refund_of = (!paid.is_empty() && rng.gen_bool(if bad { 0.3 } else { 0.03 }))
            .then(|| paid.swap_remove(rng.gen_range(0..paid.len())));
        let event = match refund_of {
            Some((owner, original)) => {
                let owner_id = Self::partner_id(owner);
                json!({
                    "invoice_id": format!("cn-{seq}"), "ts": Utc::now(),
                    "kind": if bad { "chargeback" } else { "refund" }, "partner_id": owner_id,
                    "tenant_id": format!("{owner_id}-t-0"), "currency": "USD",
                    "platform_fee": "10.00", "refers_to": original,
                })
            }
            None => {
                let invoice_id = format!("inv-{seq}");
                if paid.len() < 10_000 {
                    paid.push((i, invoice_id.clone()));
                }
                let currency = CURRENCIES[rng.gen_range(0..CURRENCIES.len())];
                let fee = rng.gen_range(5_000..500_000_u32);
                json!({
                    "invoice_id": invoice_id, "ts": Utc::now(), "kind": "paid", "partner_id": id,
                    "tenant_id": format!("{id}-t-{}", rng.gen_range(0..20)), "currency": currency,
                    "platform_fee": format!("{}.{:02}", fee / 100, fee % 100),
                    "overage": "0", "new_logo": rng.gen_bool(0.1),
                })
            }
        };
        let key = event["partner_id"].as_str().unwrap_or_default().to_owned();
        self.send(producer, &self.topics.invoices, &key, event.to_string());
    }
}
