//! The OS sandbox that programs (`run_command`, custom tools) run in:
//! bubblewrap when `bwrap` works, else Landlock, else none (refused unless
//! org.toml says `sandbox = "none"`).
