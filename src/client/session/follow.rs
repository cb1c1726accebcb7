//! A session whose pool a config reload retired: it moves to the pool that replaced it
//! between two requests (or at once, if it is idle), so the old pool drains without anyone
//! being cut off.

use super::Session;

impl Session {
    /// Moves to the new pool of this session's (database, user) once a reload retired the
    /// one it uses, if the new one serves the same way (pool mode) and nothing of the session
    /// lives on the old pool (LISTEN channels on its listener). Otherwise the session finishes
    /// on the old pool, which stays open for it. Costs one atomic load while not retired.
    pub(super) fn follow_reload(&mut self) {
        if !self.login.pool.tenure.is_retired() {
            return;
        }
        // Set again below if the session does move (its new pool is in service).
        self.stays_on_retired = true;
        let info = self.registration.info();
        let Some(next) = self.shared.pool(info.database(), info.user()) else {
            return;
        };
        if next.mode != self.login.pool.mode {
            return;
        }
        let listens = match &mut self.notify {
            Some(notify) => !notify.move_to(next.pool.clone()),
            None => false,
        };
        if listens {
            return;
        }
        self.registration.move_to(next.pool.stats_handle());
        self.login.pool = next;
        self.stays_on_retired = false;
    }
}
