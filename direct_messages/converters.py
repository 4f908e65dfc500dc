"""URL path converters of the app's routes."""

from django.urls import register_converter

from direct_messages.schemas import INT64_MAX


class IdConverter:
    """Django's ``int`` converter for ids: only values an id column can hold.

    ``int`` takes any number of digits, and a longer one would reach the query and
    overflow there; here it does not match the route, so the path is a 404.
    """

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > INT64_MAX:
            raise ValueError(f"{value} is past the largest id")
        return number

    def to_url(self, value: int) -> str:
        return str(int(value))


register_converter(IdConverter, "dm_id")
