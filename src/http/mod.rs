//! The admin API (CONTRACT §6): health, metrics and partner reads for now. Routes live in
//! [`configure`] so tests can mount them with actix's `init_service`.

pub mod audit;
pub mod auth;
pub mod enforcement;
pub mod error;
pub mod guard;
mod health;
pub mod kill_switches;
mod partners;
mod refusals;
pub mod statements;
pub mod topic_records;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use parking_lot::RwLock;

use self::auth::Authenticator;
use crate::actors::registry::Registry;
use crate::app::Health;
use crate::config::{AdminConfig, Config, Role};
use crate::domain::control::ControlTable;
use crate::store::StateStore;

/// One scan of the live partners and when it was taken.
pub type ListScan = (
    std::time::Instant,
    Arc<Vec<(crate::domain::partner::PartnerSummary, partners::Enforced)>>,
);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub store: Arc<dyn StateStore>,
    pub control: Arc<RwLock<ControlTable>>,
    pub health: Arc<Health>,
    pub auth: Arc<Authenticator>,
    pub partitions: i32,
    pub io: tokio::runtime::Handle,
    pub store_timeout: std::time::Duration,
    pub publisher: crate::publish::DecisionPublisher,
    pub rate_limit: Arc<guard::ApiRateLimit>,
    /// The bound on auditing refused requests one by one, per peer.
    pub refusals: Arc<refusals::RefusalAudit>,
    pub policy: Arc<crate::domain::enforcement::EnforcementPolicy>,
    pub payouts: Arc<dyn crate::store::statements::PayoutStore>,
    /// Where `month_close` facts are written.
    pub control_topic: String,
    /// The last scan of the live partners for `GET /v1/partners` (see `partners.rs`).
    pub partner_list: Arc<parking_lot::Mutex<Option<ListScan>>>,
    /// Held while one request takes a new scan: the others wait for it and share it.
    pub partner_list_scanning: Arc<tokio::sync::Mutex<()>>,
    /// Kill switches' enforcement-topic records in flight or acknowledged here.
    pub switch_records: Arc<topic_records::TopicRecords>,
    /// The same for manual levels' records.
    pub manual_records: Arc<topic_records::TopicRecords>,
    generated_token: Option<String>,
}

/// The adapters the admin API writes through (kept apart from the read-side state).
pub struct ApiOutputs {
    /// Keyed partition count, to find a partner's snapshot.
    pub partitions: i32,
    pub io: tokio::runtime::Handle,
    pub publisher: crate::publish::DecisionPublisher,
    pub payouts: Arc<dyn crate::store::statements::PayoutStore>,
    pub control_topic: String,
}

impl ApiState {
    pub fn new(
        config: &Config,
        registry: Arc<Registry>,
        store: Arc<dyn StateStore>,
        control: Arc<RwLock<ControlTable>>,
        health: Arc<Health>,
        outputs: ApiOutputs,
    ) -> Self {
        let mut auth = Authenticator::from_config(&config.admin.tokens);
        let generated_token = config
            .admin
            .generate_token
            .then(|| auth.generate("embedded-security", vec![Role::Security]));
        ApiState {
            registry,
            store,
            control,
            health,
            auth: Arc::new(auth),
            partitions: outputs.partitions,
            io: outputs.io,
            store_timeout: config.store.timeout,
            publisher: outputs.publisher,
            refusals: Arc::new(refusals::RefusalAudit::default()),
            rate_limit: Arc::new(guard::ApiRateLimit::new(
                config.admin.rate_limit_per_second,
                config.admin.rate_limit_burst,
                config.admin.rate_limit_delay,
            )),
            policy: Arc::new(config.enforcement.clone()),
            payouts: outputs.payouts,
            control_topic: outputs.control_topic,
            partner_list: Arc::default(),
            partner_list_scanning: Arc::default(),
            switch_records: Arc::default(),
            manual_records: Arc::default(),
            generated_token,
        }
    }
}

impl ApiState {
    /// Runs a store call on the I/O runtime (where the store's connections live) and maps
    /// its failure to the API's errors: an unreachable store is 503.
    pub async fn store_call<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, crate::store::StoreError>> + Send + 'static,
    ) -> Result<T, error::ApiError> {
        self.io
            .spawn(fut)
            .await
            .map_err(|e| error::ApiError::Internal(e.to_string()))?
            .map_err(|e| error::ApiError::StoreUnavailable(e.to_string()))
    }
}

/// Mounts every route.
pub fn configure(state: ApiState, body_limit: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .app_data(web::JsonConfig::default().limit(body_limit))
            .app_data(web::PayloadConfig::default().limit(body_limit))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(health::metrics))
            .route("/v1/partners", web::get().to(partners::list_partners))
            .route("/v1/partners/{id}", web::get().to(partners::get_partner))
            .route(
                "/v1/partners/{id}/enforcement",
                web::post().to(enforcement::set_level),
            )
            .route("/v1/kill-switches", web::post().to(kill_switches::create))
            .route("/v1/kill-switches", web::get().to(kill_switches::list))
            .route(
                "/v1/kill-switches/{id}",
                web::delete().to(kill_switches::delete),
            )
            .route("/v1/audit", web::get().to(audit::list))
            .route(
                "/v1/partners/{id}/statement",
                web::get().to(statements::get_statement),
            )
            .route(
                "/v1/partners/{id}/statement/{month}/approve",
                web::post().to(statements::approve),
            )
            .route(
                "/v1/partners/{id}/statement/{month}/paid",
                web::post().to(statements::mark_paid),
            )
            .route(
                "/v1/months/{month}/close",
                web::post().to(statements::close_month),
            );
    }
}

pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub handle: ServerHandle,
    pub future: Server,
    pub generated_token: Option<String>,
}

/// Binds the admin listener; the caller spawns `future` on the actix system.
pub fn serve(admin: &AdminConfig, state: ApiState) -> std::io::Result<RunningServer> {
    let body_limit = admin.body_limit_bytes;
    let generated_token = state.generated_token.clone();
    let server = HttpServer::new(move || {
        App::new()
            .wrap_fn(|req, srv| {
                use actix_web::dev::Service;
                let route = crate::metrics::route_label(req.match_pattern().as_deref());
                let fut = srv.call(req);
                async move {
                    let res = fut.await;
                    let status = match &res {
                        Ok(r) => r.status(),
                        Err(e) => e.as_response_error().status_code(),
                    };
                    crate::metrics::METRICS
                        .admin_requests
                        .with_label_values(&[route, status.as_str()])
                        .inc();
                    res
                }
            })
            .configure(configure(state.clone(), body_limit))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(&admin.listen)?;
    let local_addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("admin listener has no address"))?;
    let future = server.run();
    Ok(RunningServer {
        local_addr,
        handle: future.handle(),
        future,
        generated_token,
    })
}
