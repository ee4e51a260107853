"""Create the role groups; safe to run again (the initial migration already creates them)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from webapp.core.roles import ALL_ROLES


class Command(BaseCommand):
    help = "Create the auth groups for the roles: " + ", ".join(ALL_ROLES) + "."

    def handle(self, *args: Any, **options: Any) -> None:
        for role in ALL_ROLES:
            _, created = Group.objects.get_or_create(name=role)
            self.stdout.write(f"role group {role}: {'created' if created else 'already present'}")
