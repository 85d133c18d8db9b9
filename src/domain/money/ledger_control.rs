//! The control facts a partner's owner applies to its [`Ledger`] (CONTRACT §1 control,
//! §2 MDF and months): MDF expenses, credit purchases, tenant activations, FX arrivals
//! for parked lines, and month closes. Each is applied once per its id, so replaying the
//! control topic from any offset is harmless.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::credits::{CreditEffects, TenantOutcome};
use super::facts::MoneyFacts;
use super::ledger::{Ledger, LedgerEffects, ParkedInvoice};
use super::month::Month;
use super::program::Program;
use super::statement::Transition;
use super::statement_line::line_key;
use super::status::StatusView;
use super::wallet::MdfOutcome;
use super::Rejection;
use crate::domain::event::{ControlEvent, InvoiceEvent, MdfDecision};

/// What an FX rate's arrival did to the parked invoices of its currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FxArrival {
    /// Each invoice applied now, in arrival order, with its effects (attributions to publish).
    pub applied: Vec<(InvoiceEvent, LedgerEffects)>,
    /// Invoices that could not be applied now (e.g. an unknown tier, a refund over its
    /// original), with where their records are: dead-letter and audit them; they are no
    /// longer parked.
    pub rejected: Vec<(ParkedInvoice, Rejection)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    Mdf(MdfOutcome),
    Credits(CreditEffects),
    Fx(FxArrival),
    MonthClosed {
        month: Month,
        transition: Transition,
    },
    /// Not a fact this ledger acts on (another partner's, or one [`MoneyFacts`] holds).
    NoEffect,
    /// A fact money cannot use (why).
    Ignored(&'static str),
}

impl Ledger {
    /// Applies a control fact: the partner's own money facts, FX arrivals and month closes.
    /// Call [`MoneyFacts::apply`] with the fact first, so the facts include it.
    pub fn apply_control(
        &mut self,
        offset: i64,
        fact: &ControlEvent,
        facts: &MoneyFacts,
        program: &Program,
    ) -> ControlOutcome {
        let mine = fact.partner_id().is_none_or(|p| p == self.partner_id);
        // A tenant fact naming another partner still concerns this one if the tenant
        // leaves it (see `tenant_left`).
        let leaving = matches!(fact, ControlEvent::Tenant { .. });
        match fact {
            _ if !mine && !leaving => ControlOutcome::NoEffect,
            ControlEvent::MdfExpense {
                expense_id,
                amount_usd,
                decision,
                ..
            } => ControlOutcome::Mdf(self.apply_mdf(expense_id, *amount_usd, *decision)),
            ControlEvent::CreditPurchase {
                purchase_id,
                credits,
                paid_usd,
                ..
            } => ControlOutcome::Credits(self.apply_credit_purchase(
                purchase_id,
                *credits,
                *paid_usd,
                facts,
                program,
            )),
            ControlEvent::Tenant {
                tenant_id,
                partner_id,
                started_at,
                deployment_value_usd,
                ..
            } if *partner_id == self.partner_id => ControlOutcome::Credits(self.apply_tenant(
                offset,
                tenant_id,
                *started_at,
                *deployment_value_usd,
                facts,
                program,
            )),
            ControlEvent::Tenant { tenant_id, .. } => {
                ControlOutcome::Credits(self.tenant_left(tenant_id, program))
            }
            ControlEvent::FxRate { currency, .. } => {
                ControlOutcome::Fx(self.fx_arrived(currency, facts, program))
            }
            ControlEvent::MonthClose { month } => match month.parse::<Month>() {
                Ok(month) => ControlOutcome::MonthClosed {
                    month,
                    transition: self.freeze(month),
                },
                Err(_) => ControlOutcome::Ignored("month_close with a month that is not YYYY-MM"),
            },
            _ => ControlOutcome::NoEffect,
        }
    }

    /// An MDF expense: approved → debited if the co-op balance covers it, else refused
    /// (`insufficient_coop_balance`); rejected → untouched. Once per `expense_id`.
    pub fn apply_mdf(
        &mut self,
        expense_id: &str,
        amount_usd: Decimal,
        decision: MdfDecision,
    ) -> MdfOutcome {
        self.coop.apply_mdf(expense_id, amount_usd, decision)
    }

    /// A credit purchase (credits programs; ignored elsewhere), once per `purchase_id`.
    /// Activations waiting for credits are retried after it.
    pub fn apply_credit_purchase(
        &mut self,
        purchase_id: &str,
        credits: Decimal,
        paid_usd: Decimal,
        facts: &MoneyFacts,
        program: &Program,
    ) -> CreditEffects {
        let Some(rules) = &program.credits else {
            return CreditEffects::only(TenantOutcome::NotACreditsProgram);
        };
        // The discount of the partner's current tier (informational: billing sets paid_usd).
        let tier = facts
            .partner(&self.partner_id)
            .and_then(|p| p.latest_tier())
            .unwrap_or(&program.default_tier)
            .to_ascii_lowercase();
        let discount = program
            .tier(&tier)
            .and_then(|t| t.credit_discount)
            .unwrap_or_default();
        let fx = self.credits.purchase(
            purchase_id,
            credits,
            paid_usd,
            &tier,
            discount,
            rules.low_water_credits,
        );
        self.record_activations(fx)
    }

    /// A `tenant` fact at control `offset`. Only a tenant's activation (its first fact, which
    /// [`MoneyFacts`] recorded) counts as an onboarding and, in a credits program, consumes
    /// `deployment_value_usd` credits (none given = 0); later facts (upgrades, migrations
    /// in) cost nothing.
    pub fn apply_tenant(
        &mut self,
        offset: i64,
        tenant_id: &str,
        started_at: DateTime<Utc>,
        deployment_value_usd: Option<Decimal>,
        facts: &MoneyFacts,
        program: &Program,
    ) -> CreditEffects {
        let is_activation = match facts.activation_of(tenant_id) {
            Some((partner, first)) => partner == self.partner_id && first == offset,
            // Facts that never saw the tenant: the first fact this ledger sees is its activation.
            None => !self.credits.knows(tenant_id) && !self.status.knows(tenant_id),
        };
        if !is_activation {
            return CreditEffects::only(TenantOutcome::NotAnActivation);
        }
        let Some(rules) = &program.credits else {
            let outcome = if self.status.record(tenant_id, started_at) {
                TenantOutcome::Activated
            } else {
                TenantOutcome::Duplicate
            };
            let mut fx = CreditEffects::only(outcome);
            if outcome == TenantOutcome::Activated {
                fx.activated.push((tenant_id.to_string(), started_at));
            }
            return fx;
        };
        let credits = deployment_value_usd.unwrap_or_default();
        let fx = self
            .credits
            .activate(tenant_id, started_at, credits, rules.low_water_credits);
        self.record_activations(fx)
    }

    /// Counts the tenants a credits change activated as onboarded (the partner's status).
    fn record_activations(&mut self, fx: CreditEffects) -> CreditEffects {
        for (tenant, started_at) in &fx.activated {
            self.status.record(tenant, *started_at);
        }
        fx
    }

    /// A `tenant` fact naming another partner, filed here because the tenant leaves this
    /// one: an activation of it still waiting for credits here is withdrawn.
    fn tenant_left(&mut self, tenant_id: &str, program: &Program) -> CreditEffects {
        let Some(rules) = &program.credits else {
            return CreditEffects::only(TenantOutcome::NotAnActivation);
        };
        let fx = self.credits.withdraw(tenant_id, rules.low_water_credits);
        self.record_activations(fx)
    }

    /// Applies the parked invoices of `currency` now that the facts have a rate for it, in
    /// the order they arrived (a reversal right after its original).
    pub fn fx_arrived(
        &mut self,
        currency: &str,
        facts: &MoneyFacts,
        program: &Program,
    ) -> FxArrival {
        let mut out = FxArrival::default();
        if !facts.fx().has_rate(currency) || !self.parked.iter().any(|p| p.waits_for == currency) {
            return out;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.waits_for == currency);
        self.parked = waiting;
        for p in ready {
            self.applied
                .remove(&line_key(&p.event.invoice_id, p.event.kind));
            match self.apply_invoice(&p.event, facts, program) {
                Ok(fx) => out.applied.push((p.event, fx)),
                Err(rejection) => out.rejected.push((p, rejection)),
            }
        }
        out
    }

    /// Active / at-risk and the lock, at `now` (informational).
    pub fn status(&self, now: DateTime<Utc>, program: &Program) -> StatusView {
        self.status.view(now, &program.status)
    }
}
