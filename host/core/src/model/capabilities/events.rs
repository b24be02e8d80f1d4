//! Events (`taskbox:task/events`): a module asks for the `event_channels` it may publish on
//! (`upload:*`), and the host config's `[events]` caps the size of each event.

use std::sync::Arc;

use serde::Deserialize;
use taskbox_runtime::Capabilities;
use taskbox_runtime::events::EventGrant;

use super::{HostCapabilities, HostCapability, ModuleScope};
use crate::model::manifest::size;

/// Publishing events.
#[derive(Debug)]
pub struct Events;

impl HostCapability for Events {
    fn field(&self) -> Option<&'static str> {
        Some("event_channels")
    }

    fn imported_by(&self, interface: &str) -> bool {
        interface == "taskbox:task/events"
    }

    fn grant_module(
        &self,
        host: &HostCapabilities,
        module: &ModuleScope<'_>,
        grants: &mut Capabilities,
    ) {
        let channels = module.requested.of(self);
        if channels.is_empty() {
            return;
        }
        grants.events = Some(Arc::new(EventGrant {
            channels: channels.to_vec(),
            max_event_bytes: host.max_event_bytes,
            bus: Arc::clone(&module.bus),
        }));
    }
}

/// The host config's `[events]`: events tasks publish.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// The largest event, name and data together (`"64KiB"`).
    #[serde(with = "size")]
    pub max_event_size: u64,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            max_event_size: EventGrant::DEFAULT_MAX_EVENT_BYTES as u64,
        }
    }
}
