"""Load the demo: an organization with the reference kernels and its running campaigns (the
deep-zoom Mandelbrot twice: on GPUs through a WGSL kernel, and on CPUs through WebAssembly).

Idempotent: one campaign per demo, however often it runs. A demo still running is kept; a finished
one is replaced by a fresh run (so every `make run` shows work completing), and copies left by
older versions of this command are removed. Only the demo organization is touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Membership, Organization, User
from campaigns.models import Campaign, Kernel
from campaigns.services.creation import campaign_create
from campaigns.services.kernels import kernel_upload
from campaigns.services.lifecycle import campaign_resume, campaign_start

KERNELS = Path(settings.BASE_DIR) / "kernels" / "build"
# gpu kernels: <name>.wgsl with its manifest <name>.json (docs/kernels.md, GPU kernels).
GPU_KERNELS = Path(settings.BASE_DIR) / "kernels" / "gpu"
# The deep zoom's view: 512 x 384 pixels (48 tiles), at most 1,500 iterations, two billionths
# wide around a point of the "seahorse valley" (mandelbrot_deep_gen's defaults).
DEEP_ZOOM = ["512", "384", "1500", "-0.743643887037151", "0.131825904205330", "0.000000002"]

DEMOS: list[dict[str, Any]] = [
    {
        "name": "Primes below 20,000,000",
        "description": "Finds every prime below twenty million, 10,000 numbers per task.",
        "kernel": "primes",
        "generator": "primes_gen",
        "generator_args": ["20000000", "10000"],
        "priority": 10,
    },
    {
        "name": "Monte Carlo π",
        "description": "Estimates π from 720 seeded streams of 50 million random points.",
        "kernel": "montecarlo",
        "generator": "montecarlo_gen",
        "generator_args": ["720", "50000000"],
        # Folds the results into "PI_ESTIMATE INSIDE TOTAL" (docs/kernels.md, Reducers).
        "reducer": "montecarlo_reduce",
        "priority": 10,
    },
    {
        "name": "Mandelbrot 400x300",
        "description": "Renders the Mandelbrot set in 720 tiles.",
        "kernel": "mandelbrot",
        "generator": "mandelbrot_gen",
        "generator_args": ["400", "300", "24", "30", "1000"],
        "priority": 10,
    },
    {
        "name": "Mandelbrot deep zoom (GPU)",
        "description": "A view two billionths wide, in 48 tiles computed on volunteers' graphics"
        " processors by a WGSL kernel through WebGPU, in 64-bit fixed point.",
        "gpu_kernel": "mandelbrot_deep",
        "generator": "mandelbrot_deep_gen",
        "generator_args": DEEP_ZOOM,
        "priority": 10,
    },
    {
        "name": "Mandelbrot deep zoom (CPU)",
        "description": "The same deep zoom as the GPU campaign, on CPUs: the same fixed-point"
        " algorithm compiled to WebAssembly, so both give the same bytes.",
        "kernel": "mandelbrot_deep",
        "generator": "mandelbrot_deep_gen",
        "generator_args": DEEP_ZOOM,
        "priority": 10,
    },
]


class Command(BaseCommand):
    help = "Create the demo organization and start its campaigns (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        # Generators run here and now, not in a background thread of this short-lived command.
        settings.CELERY_EMBEDDED = "eager"
        with transaction.atomic():
            org, _ = Organization.objects.get_or_create(
                slug="demo", defaults={"name": "CCGSC Demo"}
            )
            owner, created = User.objects.get_or_create(
                email="demo@ccgsc.local", defaults={"display_name": "Demo owner"}
            )
            if created:
                owner.set_unusable_password()
                owner.save()
            Membership.objects.get_or_create(
                user=owner, organization=org, defaults={"role": Membership.Role.OWNER}
            )
        kernels: dict[str, Kernel] = {}
        names = {d[key] for d in DEMOS for key in ("kernel", "generator", "reducer") if key in d}
        for name in sorted(names):
            path = KERNELS / f"{name}.wasm"
            if not path.exists():
                raise CommandError(f"{path} is missing: run `make kernels`")
            kernels[name] = kernel_upload(
                organization=org, name=name, data=path.read_bytes(), created_by=owner
            )
        for name in sorted({d["gpu_kernel"] for d in DEMOS if "gpu_kernel" in d}):
            source, manifest = GPU_KERNELS / f"{name}.wgsl", GPU_KERNELS / f"{name}.json"
            kernels[f"gpu:{name}"] = kernel_upload(
                organization=org,
                name=f"{name} (WGSL)",
                kind=Kernel.Kind.GPU,
                data=source.read_bytes(),
                manifest=manifest.read_bytes(),
                created_by=owner,
            )
        for demo in DEMOS:
            same = Campaign.objects.filter(organization=org, name=demo["name"])
            live = (
                same.filter(
                    state__in=(Campaign.State.DRAFT, Campaign.State.RUNNING, Campaign.State.PAUSED)
                )
                .order_by("pk")
                .first()
            )
            # Finished runs and duplicates go (their points stay in the ledger, unlinked).
            stale = same.exclude(pk=live.pk) if live is not None else same
            removed, _ = stale.filter(organization=org).delete()
            if removed:
                self.stdout.write(f"removed an older run of {demo['name']}")
            if live is not None:
                if demo.get("reducer") and live.reducer_id is None:
                    # Demos loaded before reducers existed get theirs.
                    Campaign.objects.filter(pk=live.pk).update(reducer=kernels[demo["reducer"]])
                if (
                    live.state != Campaign.State.RUNNING
                    and live.input_state == Campaign.InputState.READY
                ):
                    if live.state == Campaign.State.DRAFT:
                        campaign_start(campaign=live)
                    else:
                        campaign_resume(campaign=live)
                self.stdout.write(f"kept   {demo['name']} ({live.state}, {live.tasks_total} tasks)")
                continue
            campaign = campaign_create(
                organization=org,
                name=demo["name"],
                description=demo["description"],
                kernel=kernels[
                    f"gpu:{demo['gpu_kernel']}" if "gpu_kernel" in demo else demo["kernel"]
                ],
                input_source=Campaign.InputSource.GENERATOR,
                generator=kernels[demo["generator"]],
                generator_args=demo["generator_args"],
                reducer=kernels[demo["reducer"]] if demo.get("reducer") else None,
                approved=True,
                created_by=owner,
                priority=demo["priority"],
            )
            campaign.refresh_from_db()
            if campaign.state == Campaign.State.FAILED:
                raise CommandError(f"demo {demo['name']!r} failed: {campaign.error}")
            campaign_start(campaign=campaign)
            self.stdout.write(f"loaded {demo['name']} ({campaign.tasks_total} tasks)")
