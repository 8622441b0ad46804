//! Baseline JPEG decoding straight to the model's size (owned by the jpeg
//! work item; see ARCHITECTURE.md).
