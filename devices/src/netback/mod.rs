//! The PV network backend (vif).
