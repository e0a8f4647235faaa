"""The one exception type the project raises for bad input; the CLI prints it as a one-line error."""


class LsrError(Exception):
    """A problem with the user's input (a file, an index, a name, an argument), stated in one line."""


class IndexFormatError(LsrError):
    """An index folder that is missing, half-written, corrupted or of another format version."""


class EngineUnavailable(LsrError):
    """An engine the index is served or built by (a Ray cluster, a Milvus server or file) that cannot be reached
    or failed: the API answers 503 (the request was fine, the service is not), the CLI one line."""
