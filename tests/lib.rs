//! End-to-end tests live beside this file; see each test file for what it proves.
