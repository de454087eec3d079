//! Backend selection and caching, tenant runtimes, master-key policy, tenant registry.
