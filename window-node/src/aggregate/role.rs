//! The four fields of an event, named apart from how they are read (errors name them too).

/// What a field is for; also its index in `fields::Picked`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The event id (`--id-field`).
    Id = 0,
    /// The event time (`--time-field`).
    Time = 1,
    /// The window key (`--key-field`).
    Key = 2,
    /// The value summed (`--value-field`).
    Value = 3,
}

impl Role {
    /// Its name in messages: `id`, `time`, `key`, `value`.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Id => "id",
            Role::Time => "time",
            Role::Key => "key",
            Role::Value => "value",
        }
    }

    /// The option that names the field, e.g. `--id-field`.
    pub const fn option(self) -> &'static str {
        match self {
            Role::Id => "--id-field",
            Role::Time => "--time-field",
            Role::Key => "--key-field",
            Role::Value => "--value-field",
        }
    }
}
