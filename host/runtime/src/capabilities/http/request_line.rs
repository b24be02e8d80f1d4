//! Caps on the parts of a request line a guest sets (`set-method`, `set-scheme`,
//! `set-authority`, `set-path-with-query`). wasmtime-wasi-http keeps what the guest gives in
//! the request resource whatever its length; these replace its four setters with ones that
//! refuse a value past its cap (the setter's own error, which a guest already handles for a
//! malformed value) before the request holds it.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::{HostOutgoingRequest as _, Method, Scheme};
use wasmtime_wasi_http::p2::types::HostOutgoingRequest;

use crate::job::JobState;

/// The longest method a guest may name: longer than any registered one.
pub(crate) const MAX_METHOD_BYTES: usize = 32;
/// The longest scheme: `https` and its kin are a few bytes.
pub(crate) const MAX_SCHEME_BYTES: usize = 32;
/// The longest authority: a 253-byte DNS name, a colon and a port.
pub(crate) const MAX_AUTHORITY_BYTES: usize = 260;
/// The longest path and query: what common servers accept in a request line.
pub(crate) const MAX_PATH_BYTES: usize = 8 << 10;

/// The interface whose setters are replaced, as wasmtime-wasi-http links it.
const TYPES: &str = "wasi:http/types@0.2.12";

type Set = wasmtime::Result<(Result<(), ()>,)>;

/// Replaces the four setters of `outgoing-request` that [`super::add_to_linker`] linked.
pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(TYPES)?;
    types.func_wrap(
        "[method]outgoing-request.set-method",
        |mut store: StoreContextMut<'_, JobState>,
         (request, method): (Resource<HostOutgoingRequest>, Method)|
         -> Set {
            if let Method::Other(name) = &method
                && name.len() > MAX_METHOD_BYTES
            {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_method(request, method)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-scheme",
        |mut store: StoreContextMut<'_, JobState>,
         (request, scheme): (Resource<HostOutgoingRequest>, Option<Scheme>)|
         -> Set {
            if let Some(Scheme::Other(name)) = &scheme
                && name.len() > MAX_SCHEME_BYTES
            {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_scheme(request, scheme)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-authority",
        |mut store: StoreContextMut<'_, JobState>,
         (request, authority): (Resource<HostOutgoingRequest>, Option<String>)|
         -> Set {
            if authority
                .as_ref()
                .is_some_and(|authority| authority.len() > MAX_AUTHORITY_BYTES)
            {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_authority(request, authority)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-path-with-query",
        |mut store: StoreContextMut<'_, JobState>,
         (request, path): (Resource<HostOutgoingRequest>, Option<String>)|
         -> Set {
            if path
                .as_ref()
                .is_some_and(|path| path.len() > MAX_PATH_BYTES)
            {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_path_with_query(request, path)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
