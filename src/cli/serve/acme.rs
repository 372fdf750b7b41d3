//! The ACME tasks of the configuration being served, restarted when a reload changes
//! what they work from.

use super::*;

/// What the ACME tasks work from: the `[acme]` table, the state directory, and the names
/// of the ACME sites. A reload that changes it restarts them. (Kept instead of a copy of
/// the whole configuration, which with 100,000 sites is costly to clone.)
#[derive(PartialEq)]
pub(super) struct AcmeInputs {
    acme: Option<crate::config::Acme>,
    state_dir: PathBuf,
    sites: Vec<(String, Vec<crate::names::HostName>)>,
}

impl AcmeInputs {
    pub(super) fn of(c: &Config) -> AcmeInputs {
        AcmeInputs {
            acme: c.acme.clone(),
            state_dir: c.state_dir.clone(),
            sites: c
                .sites
                .iter()
                .filter(|s| s.tls == TlsMode::Acme)
                .map(|s| (s.name.clone(), s.hosts.clone()))
                .collect(),
        }
    }
}

/// The ACME tasks for the configuration being served: restarted when a reload changes
/// their inputs, stopped when dropped.
pub(super) struct AcmeTasks {
    inputs: AcmeInputs,
    manager: crate::acme::Manager,
    challenges: std::sync::Arc<crate::acme::Challenges>,
    issued: tokio::sync::mpsc::UnboundedSender<String>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    fleet: Option<Arc<crate::cluster::acme::Fleet>>,
}

impl AcmeTasks {
    pub(super) fn start(
        config: &Config,
        shared: &Shared,
        issued: tokio::sync::mpsc::UnboundedSender<String>,
        fleet: Option<Arc<crate::cluster::acme::Fleet>>,
    ) -> AcmeTasks {
        let (challenges, metrics) = (shared.challenges.clone(), shared.metrics.clone());
        AcmeTasks {
            inputs: AcmeInputs::of(config),
            manager: crate::acme::Manager::start(
                config,
                challenges.clone(),
                issued.clone(),
                metrics.clone(),
                fleet.clone(),
            ),
            challenges,
            issued,
            metrics,
            fleet,
        }
    }

    /// Restarts the tasks when `config` (just installed) changed what they work from.
    pub(super) fn follow(&mut self, config: &Config) {
        let inputs = AcmeInputs::of(config);
        if inputs != self.inputs {
            self.manager = crate::acme::Manager::start(
                config,
                self.challenges.clone(),
                self.issued.clone(),
                self.metrics.clone(),
                self.fleet.clone(),
            );
            self.inputs = inputs;
        }
    }
}
