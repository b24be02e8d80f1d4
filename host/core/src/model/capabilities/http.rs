//! Outbound HTTP (`wasi:http`): a module asks for `allowed_outbound_hosts`, the policy's
//! `allowed_outbound_hosts` must cover them, and the host config's `[http]` caps what each
//! job may do.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use taskbox_runtime::Capabilities;
use taskbox_runtime::guest_text::quote;
use taskbox_runtime::http::{HostPattern, HttpGrant, HttpLimits};

use super::{HostCapabilities, HostCapability, ModuleScope};
use crate::model::manifest::{Policy, duration, size};

/// Outbound HTTP.
#[derive(Debug)]
pub struct Http;

impl HostCapability for Http {
    fn field(&self) -> Option<&'static str> {
        Some("allowed_outbound_hosts")
    }

    fn imported_by(&self, interface: &str) -> bool {
        interface.starts_with("wasi:http/")
    }

    fn check_request(&self, request: &[String]) -> Result<(), String> {
        for entry in request {
            HostPattern::parse(entry).map_err(|reason| reason.to_string())?;
        }
        Ok(())
    }

    fn check_policy(&self, request: &[String], policy: &Policy) -> Result<(), String> {
        match request.iter().find(|host| !allows_host(policy, host)) {
            Some(host) => Err(format!(
                "{} is not covered by the host's allowed_outbound_hosts ({})",
                quote(host),
                policy.allowed_outbound_hosts.join(", ")
            )),
            None => Ok(()),
        }
    }

    fn grant_module(
        &self,
        host: &HostCapabilities,
        module: &ModuleScope<'_>,
        grants: &mut Capabilities,
    ) {
        let hosts = module.requested.of(self);
        if hosts.is_empty() {
            return;
        }
        grants.http = HttpGrant::new(hosts, host.http.clone())
            .inspect_err(|reason| {
                // Parsed when the manifest was read; one stored before then gets no HTTP
                // rather than a wider grant.
                tracing::warn!(module = %module.module, "no outbound HTTP: {reason}");
            })
            .ok()
            .map(Arc::new);
    }
}

/// Whether the policy's hosts cover `host`: `*` covers any; otherwise one of them equals it,
/// or is a `*.` entry it is a subdomain of, with the same scheme and port.
fn allows_host(policy: &Policy, host: &str) -> bool {
    let Ok(wanted) = HostPattern::parse(host) else {
        return false;
    };
    policy.allowed_outbound_hosts.iter().any(|allowed| {
        allowed == "*" || HostPattern::parse(allowed).is_ok_and(|allowed| allowed.covers(&wanted))
    })
}

/// The host config's `[http]`: where tasks may never go, and how much each job may do.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Let tasks reach loopback, private and link-local addresses (off: only for trusted
    /// networks and tests).
    pub allow_private_networks: bool,
    /// Requests one job may have under way at once.
    pub max_concurrent_requests: usize,
    /// Requests one job may send.
    pub max_requests: u32,
    /// The longest wait for a connection (`"10s"`).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// The longest one exchange may take, to the body's last byte (`"30s"`).
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// The largest response body (`"16MiB"`).
    #[serde(with = "size")]
    pub max_response_size: u64,
    /// The largest request body a task may send (`"16MiB"`).
    #[serde(with = "size")]
    pub max_request_size: u64,
    /// The largest response header section (`"64KiB"`).
    #[serde(with = "size")]
    pub max_header_size: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let limits = HttpLimits::default();
        Self {
            allow_private_networks: limits.allow_private_networks,
            max_concurrent_requests: limits.max_concurrent_requests,
            max_requests: limits.max_requests,
            connect_timeout: limits.connect_timeout,
            request_timeout: limits.request_timeout,
            max_response_size: limits.max_response_bytes,
            max_request_size: limits.max_request_bytes,
            max_header_size: limits.max_header_bytes as u64,
        }
    }
}

impl HttpSettings {
    /// The runtime's limits.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            allow_private_networks: self.allow_private_networks,
            max_concurrent_requests: self.max_concurrent_requests.max(1),
            max_requests: self.max_requests,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            max_response_bytes: self.max_response_size,
            max_request_bytes: self.max_request_size,
            max_header_bytes: usize::try_from(self.max_header_size).unwrap_or(usize::MAX),
        }
    }
}
