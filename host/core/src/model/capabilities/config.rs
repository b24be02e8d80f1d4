//! The module's settings (`taskbox:task/config`): every module has them without asking; the
//! host config's `[modules]` and the API set them, and a job reads them with `config.get`.

use std::sync::Arc;
use std::time::Duration;

use taskbox_runtime::Capabilities;

use super::{HostCapabilities, HostCapability, JobScope};

/// How long a worker uses a module's settings before it reads them again, by default.
pub const SETTINGS_REFRESH: Duration = Duration::from_secs(5);

/// The module's settings.
#[derive(Debug)]
pub struct Config;

impl HostCapability for Config {
    fn field(&self) -> Option<&'static str> {
        None
    }

    fn imported_by(&self, interface: &str) -> bool {
        interface == "taskbox:task/config"
    }

    fn grant_job(&self, _host: &HostCapabilities, job: &JobScope<'_>, grants: &mut Capabilities) {
        grants.config = Arc::clone(&job.settings);
    }
}
