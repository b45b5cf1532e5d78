"""Forms of the owners' web UI. They validate and parse input only; every write is one call into
campaigns.services, whose ServiceError messages the views show next to the field concerned."""

from __future__ import annotations

import shlex
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from accounts.models import Organization
from campaigns.inputs import env_name_problem
from campaigns.models import Campaign, Kernel


def parse_args(text: str) -> list[str]:
    """Command-line arguments written as in a shell: `-n 10 "two words"`."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ValidationError(f"These arguments cannot be parsed: {exc}.") from None


def parse_env(text: str) -> dict[str, str]:
    """Environment variables, one NAME=value per line; blank lines are ignored."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValidationError(f"Line {number}: write NAME=value.")
        problem = env_name_problem(name)
        if problem is not None:
            raise ValidationError(f"Line {number}: {problem}.")
        if "\0" in value:
            raise ValidationError(f"Line {number}: NUL characters are not allowed.")
        env[name] = value
    return env


class KernelUploadForm(forms.Form):
    file = forms.FileField(
        label="Kernel file",
        help_text=(
            "A WASI command module (.wasm), a JavaScript module (.js, browsers only) or WGSL"
            " source (.wgsl, kind gpu, with its manifest)."
        ),
    )
    name = forms.CharField(
        max_length=120, required=False, help_text="Empty: the file name without extension."
    )
    kind = forms.ChoiceField(choices=Kernel.Kind.choices, initial=Kernel.Kind.WASM)
    description = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )
    manifest = forms.CharField(
        required=False,
        max_length=4096,
        label="GPU manifest",
        widget=forms.Textarea(
            attrs={"rows": 2, "placeholder": '{"workgroup_size": 64, "output_bytes": "input"}'}
        ),
        help_text="Kind gpu only: a JSON object (docs/kernels.md, GPU kernels).",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("file")
        if upload is not None and not data.get("name"):
            data["name"] = upload.name.rsplit("/", 1)[-1].rsplit(".", 1)[0][:120]
        return data


class KernelChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} · {obj.get_kind_display()} · {obj.sha256[:12]}"


class CampaignCreateForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(
        required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2})
    )
    kernel = KernelChoiceField(queryset=Kernel.objects.none())
    args = forms.CharField(
        required=False,
        label="Kernel arguments",
        help_text='Given to every task after argv[0], written as in a shell: -n 10 "a b".',
    )
    env = forms.CharField(
        required=False,
        label="Environment",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "NAME=value"}),
        help_text="One NAME=value per line. Kernels see exactly these variables.",
    )
    static_data = forms.FileField(
        required=False,
        help_text="Optional bytes shared by every task, readable at /ccgsc/static.",
    )

    input_source = forms.ChoiceField(
        choices=Campaign.InputSource.choices,
        initial=Campaign.InputSource.GENERATOR,
        widget=forms.RadioSelect,
        label="Tasks come from",
    )
    generator = KernelChoiceField(
        queryset=Kernel.objects.none(),
        required=False,
        help_text="Runs once on the server; writes one frame per task (see docs/kernels.md).",
    )
    generator_args = forms.CharField(required=False, label="Generator arguments")
    task_file = forms.FileField(
        required=False,
        help_text="JSON Lines (one task per line) or msgpack (.msgpack): a string, or "
        '{"input": ..., "args": [...], "env": {...}} per task.',
    )

    priority = forms.IntegerField(
        min_value=1,
        max_value=1000,
        initial=10,
        help_text="Share of the volunteer pool relative to other running campaigns.",
    )
    task_timeout = forms.IntegerField(
        min_value=1,
        max_value=7 * 24 * 3600,
        initial=300,
        label="Task timeout (s)",
        help_text="How long a worker may hold a task before it is given to another.",
    )
    max_attempts = forms.IntegerField(min_value=1, max_value=100, initial=5)
    points_per_task = forms.IntegerField(min_value=0, max_value=1_000_000, initial=10)
    min_quorum = forms.IntegerField(
        min_value=1,
        max_value=10,
        initial=1,
        help_text="Agreeing results from distinct users needed to accept a task.",
    )
    target_replicas = forms.IntegerField(
        min_value=1, max_value=10, initial=1, help_text="Replicas issued at first."
    )
    max_error_replicas = forms.IntegerField(min_value=1, max_value=100, initial=5)
    max_total_replicas = forms.IntegerField(min_value=1, max_value=100, initial=10)
    quorum_needs_account = forms.BooleanField(
        required=False,
        label="Every quorum includes a signed-in volunteer",
        help_text="Anonymous sessions alone never decide a task (slower; for high-stakes work).",
    )
    adaptive_replication = forms.BooleanField(
        required=False,
        label="Adaptive replication (accept trusted volunteers' results alone)",
        help_text="Risk: a volunteer trusted on this kernel has their result accepted without a "
        "second opinion, checked only at random (at least 1 in 20). A trusted volunteer who "
        "turns hostile gets wrong results accepted until a spot check catches them. Off: every "
        "task gets its full quorum of independent agreeing results.",
    )
    verifier = KernelChoiceField(
        queryset=Kernel.objects.none(),
        required=False,
        help_text="Optional: decides agreement instead of byte equality.",
    )
    reducer = KernelChoiceField(
        queryset=Kernel.objects.none(),
        required=False,
        help_text="Optional: folds the results into the campaign's output (docs/kernels.md).",
    )
    start_now = forms.BooleanField(
        required=False, initial=True, label="Start as soon as the tasks are ready"
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kernels = Kernel.objects.filter(organization=organization).order_by("name", "-created_at")
        wasm = kernels.filter(kind=Kernel.Kind.WASM)
        fields = self.fields
        for name, queryset in (
            ("kernel", kernels),
            ("generator", wasm),
            ("verifier", wasm),
            ("reducer", wasm),
        ):
            field = fields[name]
            assert isinstance(field, forms.ModelChoiceField)
            field.queryset = queryset

    def clean_args(self) -> list[str]:
        return parse_args(self.cleaned_data.get("args") or "")

    def clean_generator_args(self) -> list[str]:
        return parse_args(self.cleaned_data.get("generator_args") or "")

    def clean_env(self) -> dict[str, str]:
        return parse_env(self.cleaned_data.get("env") or "")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        source = data.get("input_source")
        if source == Campaign.InputSource.GENERATOR and not data.get("generator"):
            self.add_error("generator", "Choose the generator kernel that writes the tasks.")
        if source == Campaign.InputSource.FILE and not data.get("task_file"):
            self.add_error("task_file", "Upload the task file.")
        quorum, target, total = (
            data.get("min_quorum"),
            data.get("target_replicas"),
            data.get("max_total_replicas"),
        )
        if quorum and target and target < quorum:
            self.add_error("target_replicas", "Issue at least as many replicas as the quorum.")
        if target and total and total < target:
            self.add_error("max_total_replicas", "The cap must be at least the target.")
        return data

    def policies(self) -> dict[str, int]:
        from campaigns.services.creation import POLICY_FIELDS

        return {name: self.cleaned_data[name] for name in POLICY_FIELDS}


class RegenerateForm(forms.Form):
    generator_args = forms.CharField(required=False)

    def clean_generator_args(self) -> list[str] | None:
        text = self.cleaned_data.get("generator_args")
        return None if text is None or not text.strip() else parse_args(text)


RESULT_FILTERS = {
    "all": "All returned",
    "valid": "Valid",
    "errors": "Errors and timeouts",
    "pending": "Awaiting validation",
    "invalid": "Invalid",
}


class ResultFilterForm(forms.Form):
    show = forms.ChoiceField(choices=list(RESULT_FILTERS.items()), required=False)
    seq = forms.IntegerField(min_value=0, required=False, label="Task #")
