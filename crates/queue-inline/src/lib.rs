//! The in-process queue backend: worker pools per kind, lane-aware dispatch, local limiter, SQLite job store.
