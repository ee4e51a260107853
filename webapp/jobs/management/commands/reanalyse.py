"""Queue analysed studies again with the model versions in use now (researcher or admin)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.core.models import Case
from webapp.core.services import RoleRequiredError
from webapp.jobs.services import count_queued, reanalyse_cases


class Command(BaseCommand):
    help = (
        "Queue the analysed studies of the named cases (or of every case with --all) again, "
        "for example after promoting a model version. Runs as USERNAME, who needs the "
        "researcher or admin role; each case's request is audited. Earlier predictions stay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True, help="Researcher or admin to act as.")
        parser.add_argument("case_codes", nargs="*", metavar="CASE", help="Case codes.")
        parser.add_argument("--all", action="store_true", help="Re-analyse every case.")

    def handle(self, *args: Any, **options: Any) -> None:
        codes: list[str] = options["case_codes"]
        if bool(codes) == bool(options["all"]):
            raise CommandError("Name one or more case codes, or pass --all (not both).")
        try:
            user = get_user_model().objects.get(username=options["username"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {options['username']!r}; create it first.") from None
        cases: list[Case] | None = None
        if codes:
            cases = list(Case.objects.filter(code__in=codes))
            missing = sorted(set(codes) - {case.code for case in cases})
            if missing:
                raise CommandError(f"No case with code {', '.join(missing)}; nothing was queued.")
        try:
            jobs = reanalyse_cases(user, cases)
        except RoleRequiredError as error:
            raise CommandError(str(error)) from None
        queued = count_queued(jobs)
        self.stdout.write(
            f"{queued} of {len(jobs)} analysed studies queued; "
            f"{len(jobs) - queued} were already running."
        )
