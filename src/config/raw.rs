//! The INI as read, before validation. STUB: the config helper replaces it.
