//! Chat lane stores: MemoryLaneStore and the per-tenant lane-store factory.
