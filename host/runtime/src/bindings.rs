//! The host side of the `taskbox:task` WIT world: the one `bindgen!` site.
//!
//! WASI packages map onto wasmtime-wasi's and wasmtime-wasi-http's own bindings, so the
//! standard implementations serve them; the `taskbox:task` interfaces are implemented in
//! [`crate::capabilities`].

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "task",
    exports: { default: async },
    imports: {
        "taskbox:task/events.publish": async,
        "taskbox:task/jobs.enqueue": async,
        "taskbox:task/sql.query": async,
        "taskbox:task/sql.execute": async,
        "taskbox:task/sql.batch": async,
    },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
    },
    require_store_data_send: true,
});
