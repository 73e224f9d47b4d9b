//! The `--fail` hooks of a session: a rule that fires at a stage (delay,
//! drop or reply instead), and the refusals kept for `--events`.

use super::{Envelope, Session, State, Step};
use crate::smtp::fail::{Action, Injection, Refusal, Stage};
use crate::smtp::reply::Reply;

/// What a `--fail` rule did to a stage.
pub(super) enum Fired {
    No,
    Delay(std::time::Duration),
    /// Instead of the normal step.
    Instead(Step),
}

impl Session {
    /// The refusal to report before the reply now being sent, if any.
    pub fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    /// The `--fail` rule that fired last, to be logged.
    pub fn take_injection(&mut self) -> Option<Injection> {
        self.injection.take()
    }

    /// Counts an arrival at `stage` for the `--fail` rules and applies the
    /// rule that fires, if any. `subject`: the address or HELO name the
    /// globs match; `env`, `address`: for the refusal report.
    pub(super) fn inject(
        &mut self,
        stage: Stage,
        subject: Option<&str>,
        env: Option<&Envelope>,
        address: Option<&str>,
    ) -> Fired {
        let Some((rules, counter)) = &self.hooks.fail else {
            return Fired::No;
        };
        let Some((rule, n)) = rules.arrive(&**counter, stage, subject) else {
            return Fired::No;
        };
        let action = rule.action.clone();
        self.injection = Some(Injection {
            stage,
            n,
            rule: rule.text.clone(),
        });
        match action {
            Action::Delay(d) => Fired::Delay(d),
            Action::Drop => {
                self.state = State::Closed;
                Fired::Instead(Step::Drop)
            }
            Action::Reply(reply) => {
                self.report(stage, &reply, env, address);
                if reply.code == 421 {
                    return Fired::Instead(self.close(reply)); // as a real 421 does
                }
                Fired::Instead(Step::Reply(reply))
            }
        }
    }

    /// Keeps a refusal for `--events`, with the transaction so far.
    pub(super) fn report(
        &mut self,
        stage: Stage,
        reply: &Reply,
        env: Option<&Envelope>,
        address: Option<&str>,
    ) {
        if !self.hooks.report {
            return;
        }
        let env = env.or(match &self.state {
            State::Mail(env) | State::Data(env, _) => Some(env),
            _ => None,
        });
        self.refusal = Some(Refusal {
            stage,
            reply: reply.clone(),
            from: env.map(|e| e.from.clone()),
            to: env.map(|e| e.rcpts.clone()).unwrap_or_default(),
            address: address.map(str::to_string),
        });
    }
}
