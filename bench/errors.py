"""The one exception type users see: a problem with their input, stated in one line."""


class DabenchError(Exception):
    """Bad input or state the user can fix. The CLI prints the message, exits non-zero."""


class ShardError(DabenchError):
    """A shard file is missing, truncated, corrupt or does not match the schema."""


class ShardMismatchError(DabenchError):
    """A valid shard exists where one made with other settings is asked for."""
