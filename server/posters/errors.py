"""Errors of poster templates and posters."""
from server.errors import ConflictError, NotFoundError, ValidationError


class TemplateNotFoundError(NotFoundError):
    code, message = 40450, "no such poster template"


class ContentNotFoundError(NotFoundError):
    code, message = 40451, "no such content to put on a poster"


class PosterNotFoundError(NotFoundError):
    code, message = 40452, "no such poster image"


class DefaultTemplateError(ConflictError):
    code, message = 40950, "the default poster template must stay active; make another one the default first"


class UnknownContentTypeError(ValidationError):
    code, message = 42250, "posters cannot show this content type"


class ChannelNotSupportedError(ValidationError):
    code, message = 42251, "this channel has no poster"


class InvalidBackgroundError(ValidationError):
    code, message = 42252, "the background must be a PNG or JPEG image of at most 1 MiB"


class InvalidLayoutError(ValidationError):
    code, message = 42253, "the poster template cannot be drawn with this layout"
