//! Parser robustness over the network: malformed input gets the right stream error, the
//! server never panics and keeps serving other clients. (Filled in by the robustness work.)
