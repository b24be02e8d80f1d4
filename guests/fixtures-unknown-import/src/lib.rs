//! A task module that also imports `acme:vault/secrets`, an interface no taskbox host
//! provides: loading it must fail and name that import.

use taskbox_guest::{Bytes, Job, TaskError};

mod vault {
    wit_bindgen::generate!({
        inline: "
            package acme:vault;

            interface secrets {
                reveal: func(name: string) -> string;
            }

            world vault-user {
                import secrets;
            }
        ",
    });
}

fn reveal(_job: &Job, input: Bytes) -> Result<Bytes, TaskError> {
    let name = String::from_utf8_lossy(&input.0);
    Ok(Bytes(
        vault::acme::vault::secrets::reveal(&name).into_bytes(),
    ))
}

taskbox_guest::tasks!(reveal);
