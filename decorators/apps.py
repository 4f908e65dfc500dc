from django.apps import AppConfig


class DecoratorsConfig(AppConfig):
    name = "decorators"
