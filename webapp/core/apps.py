from typing import Any, cast

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string


class CoreConfig(AppConfig):
    name = "webapp.core"
    label = "core"
    verbose_name = "Cases and review"

    def ready(self) -> None:
        from webapp.core import signals  # noqa: F401  (connects the login audit receivers)

        check_storage_backend()


def check_storage_backend() -> None:
    """Import the file storage class now, so a wrong STORAGE_BACKEND stops start-up.

    Django resolves storages lazily, on the first file access, which would let a server start
    and then fail the first upload.
    """
    storages = cast(dict[str, dict[str, Any]], settings.STORAGES)
    path = str(storages["default"]["BACKEND"])
    try:
        import_string(path)
    except ImportError as error:
        raise ImproperlyConfigured(
            f"Environment variable STORAGE_BACKEND={path!r} names no importable storage class "
            f"({error}). Unset it for local files, or give a dotted path such as "
            "'django.core.files.storage.FileSystemStorage'."
        ) from error
