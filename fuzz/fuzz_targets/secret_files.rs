//! The files secrets are read from: any bytes as a member's published
//! recipient (`.stead/recipients/<id>`, written by other machines through
//! git), as this machine's `identity.age`, and as a secret's ciphertext and
//! recipient list, read the ways a plan reads them. Every outcome is a
//! value or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::secret::{self, Scope, Secrets};

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    let config = layout.home().join("config");
    let recipients = config.join(secret::RECIPIENTS_DIR);
    let shared = config.join(secret::LINEAGE_SECRETS_DIR);
    std::fs::create_dir_all(&recipients).expect("scratch dirs");
    std::fs::create_dir_all(&shared).expect("scratch dirs");
    stead_fuzz::put(&recipients.join("m"), data);
    stead_fuzz::put(&shared.join("x.age"), data);
    stead_fuzz::put(&shared.join("x.recipients"), data);
    stead_fuzz::put(&shared.join("x.rotate"), data);
    stead_fuzz::put(&layout.identity_file(), data);
    if let Ok(secrets) = Secrets::open(layout, false) {
        let secrets = secrets.with_config(&config);
        let _ = secrets.members();
        let _ = secrets.value(Scope::Lineage, "x");
        let _ = secrets.stored_recipients(Scope::Lineage, "x");
        let _ = secrets.is_recipient_of(Scope::Lineage, "x");
        let _ = secrets.rotation_requested(Scope::Lineage, "x");
    }
});
