//! The opt-in bounded per-partner view (CONTRACT §7): with `metrics.top_partners = N`,
//! the N busiest live partners by lifetime requests get a series each. Off by default,
//! because 100k partners must not mean 100k series.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use crate::actors::messages::GetSummary;
use crate::actors::registry::Registry;
use crate::metrics::METRICS;

/// Recomputes the view every `interval` until the task is dropped with the system.
pub async fn run(registry: Arc<Registry>, n: usize, interval: Duration) {
    loop {
        actix_rt::time::sleep(interval).await;
        let summaries = join_all(registry.addresses().iter().map(|a| a.send(GetSummary))).await;
        let mut busiest: Vec<(String, u64)> = summaries
            .into_iter()
            .flatten()
            .map(|s| (s.partner_id, s.usage.requests))
            .collect();
        busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        busiest.truncate(n);
        METRICS.partner_top_requests.reset();
        for (id, requests) in busiest {
            METRICS
                .partner_top_requests
                .with_label_values(&[&id])
                .set(requests.min(i64::MAX as u64) as i64);
        }
    }
}
