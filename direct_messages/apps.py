from django.apps import AppConfig


class DirectMessagesConfig(AppConfig):
    name = "direct_messages"
    verbose_name = "Direct messages"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save, pre_delete

        from direct_messages import checks  # noqa: F401  (registers the system checks)
        from direct_messages.auth import connect_signals
        from direct_messages.erasure import user_erase_prepare
        from direct_messages.ratelimit import send_window_create

        connect_signals()
        post_save.connect(send_window_create, sender=get_user_model(), dispatch_uid="dm_window")
        pre_delete.connect(user_erase_prepare, sender=get_user_model(), dispatch_uid="dm_erase")
        try:  # notifications need the `push` extra (django-tasks, pywebpush)
            from direct_messages import tasks
        except ImportError:
            return
        from direct_messages.signals import message_sent

        message_sent.connect(tasks.message_sent_receiver, dispatch_uid="direct_messages.push")
