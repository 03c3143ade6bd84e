//! The storage conformance suite: every backend must pass every case.
//!
//! Each case runs against a fresh SQLite file and a fresh PostgreSQL database. PostgreSQL is
//! skipped (loudly) only when no server answers, unless `SIGIL_REQUIRE_POSTGRES=1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

mod audit_log;
mod common;
mod delegation;
mod policy;
mod registry;
mod spiffe;

macro_rules! conformance {
    ($($module:ident :: $case:ident),+ $(,)?) => {
        mod sqlite_backend { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { crate::$module::$case(crate::common::sqlite().await).await } )+ }
        mod postgres_backend { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { if let Some(db) = crate::common::postgres().await { crate::$module::$case(db).await } } )+ }
    };
}

conformance!(
    registry::user_crud,
    registry::uniqueness_names_the_field,
    registry::optimistic_versioning_rejects_stale_writes,
    registry::concurrent_read_modify_write_loses_nothing,
    registry::pagination_walks_every_row_once,
    registry::filters_combine,
    registry::foreign_keys_protect_owners,
    registry::change_sets_are_atomic,
    registry::failed_audit_write_rolls_back_the_change,
    registry::group_commit_isolates_failures,
    registry::keys_and_settings,
    registry::transfer_ownership_moves_everything,
    registry::touch_records_use_without_a_new_version,
    audit_log::leases_are_exclusive_until_they_expire,
    audit_log::a_lapsed_lease_nobody_took_still_fences_for_its_holder,
    audit_log::integration_places_each_record_once,
    audit_log::audit_search_filters,
    audit_log::search_finds_every_agent_of_a_chain,
    audit_log::search_spans_integrated_and_pending_records,
    policy::policy_versions_and_activations,
    delegation::passwords_and_grant_families,
    delegation::revoking_a_token_revokes_what_was_derived_from_it,
    delegation::purges_go_a_chunk_at_a_time,
    delegation::registration_tokens_list_and_revoke,
    delegation::single_use_marks_are_spent_once_under_concurrency,
    spiffe::x509_authorities_and_entries,
    spiffe::jwt_authorities_join_tokens_and_nodes,
    spiffe::federations,
);
