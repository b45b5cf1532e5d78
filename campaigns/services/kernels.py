"""Kernels: validated at upload (the sandbox admits a WebAssembly module, or a JavaScript
module is checked for its export), stored once per organization and sha256, deleted only when
no campaign uses them."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.db import transaction

from accounts.models import Organization, User
from campaigns.models import Campaign, Kernel
from campaigns.services.base import ServiceError, limits, sandbox_host
from campaigns.services.blobs import blob_put

log = logging.getLogger(__name__)


def kernel_upload(
    *,
    organization: Organization,
    name: str,
    data: bytes,
    kind: str = Kernel.Kind.WASM,
    description: str = "",
    created_by: User | None = None,
    manifest: bytes | str | dict[str, Any] | None = None,
) -> Kernel:
    """Validate and store a kernel. The same bytes uploaded twice by one organization give the
    existing kernel back. Raises ServiceError saying which check failed."""
    kernel, _ = kernel_get_or_upload(
        organization=organization,
        name=name,
        data=data,
        kind=kind,
        description=description,
        created_by=created_by,
        manifest=manifest,
    )
    return kernel


def kernel_delete(*, kernel: Kernel) -> None:
    """Delete a kernel no campaign refers to (as its kernel, generator, verifier or reducer);
    ServiceError naming the campaigns otherwise. Its blob stays (content-addressed, maybe
    shared)."""
    from django.db.models import Q

    with transaction.atomic():
        Kernel.objects.select_for_update().filter(pk=kernel.pk).first()
        users = list(
            Campaign.objects.filter(
                Q(kernel=kernel) | Q(generator=kernel) | Q(verifier=kernel) | Q(reducer=kernel)
            )
            .order_by("pk")
            .values_list("name", flat=True)[:4]
        )
        if users:
            shown = ", ".join(f"“{name}”" for name in users[:3])
            more = " and others" if len(users) > 3 else ""
            raise ServiceError(
                f"The kernel “{kernel.name}” is used by {shown}{more}: a kernel stays as long as "
                "a campaign refers to it (as its kernel, generator, verifier or reducer)."
            )
        kernel.delete()


def kernel_get_or_upload(
    *,
    organization: Organization,
    name: str,
    data: bytes,
    kind: str = Kernel.Kind.WASM,
    description: str = "",
    created_by: User | None = None,
    manifest: bytes | str | dict[str, Any] | None = None,
) -> tuple[Kernel, bool]:
    """kernel_upload, also saying whether a new kernel was stored: (kernel, created). Kernels
    are content-addressed, one per organization and sha256, so bytes the organization already
    uploaded give (the existing kernel, False), under its first name, kind and description;
    nothing is stored or renamed. A module declaring no memory maximum is stored with the
    platform's cap written in, under the new bytes' sha256 (the upload's is kept as
    original_sha256), so uploading it again finds the same kernel. A gpu kernel (WGSL) comes
    with its `manifest` (JSON text or object; see _check_gpu_kernel)."""
    cap = limits()["KERNEL_MAX_BYTES"]
    if not data:
        raise ServiceError("The kernel file is empty.")
    if len(data) > cap:
        raise ServiceError(f"The kernel is {len(data)} bytes; the limit is {cap} bytes.")
    memory_max: int | None = None
    imports: list[str] = []
    original_sha256 = ""
    stored_manifest: dict[str, Any] | None = None
    if manifest is not None and kind != Kernel.Kind.GPU:
        raise ServiceError("Only a gpu kernel takes a manifest.")
    if kind == Kernel.Kind.GPU:
        stored_manifest = _check_gpu_kernel(data, manifest)
    elif kind == Kernel.Kind.WASM:
        # Imported here: loading wasmtime is only needed by processes that validate or run
        # kernels, not by every web process at start-up.
        from kernelhost import KernelRejected

        try:
            admitted = sandbox_host().admit(data, memory_cap=limits()["KERNEL_MEMORY_CAP"])
        except KernelRejected as exc:
            reason = exc.reason[:1].lower() + exc.reason[1:]  # it follows a colon
            raise ServiceError(f"The kernel was rejected: {reason}") from None
        # A module without a memory maximum is stored with the platform's cap written in
        # (browsers enforce no other limit); it is content-addressed by its new hash.
        if admitted.rewritten:
            data, original_sha256 = admitted.wasm, admitted.original_sha256
        memory_max, imports = admitted.info.memory_max, list(admitted.info.imports)
    elif kind == Kernel.Kind.JS:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ServiceError("A JavaScript kernel must be UTF-8 text.") from None
        if "run" not in text or "export" not in text:
            raise ServiceError(
                "A JavaScript kernel is an ES module that exports"
                " an async function run(input, context)."
            )
    else:
        raise ServiceError(f"Unknown kernel kind {kind!r}: use wasm, js or gpu.")
    digest = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        existing = Kernel.objects.filter(organization=organization, sha256=digest).first()
        if existing is not None:
            if stored_manifest is not None and existing.manifest != stored_manifest:
                # One kernel per organization and sha256, and the manifest is part of what a
                # kernel is: a second manifest for the same WGSL would change running campaigns.
                raise ServiceError(
                    f"This WGSL is already the kernel “{existing.name}” with another manifest"
                    f" ({json.dumps(existing.manifest, sort_keys=True)}): a kernel's manifest"
                    " never changes; upload the WGSL with a change (a comment will do) to use"
                    " another."
                )
            return existing, False
        blob = blob_put(data)
        kernel = Kernel.objects.create(
            organization=organization,
            name=name.strip() or "kernel",
            description=description,
            kind=kind,
            blob=blob,
            sha256=digest,
            size=len(data),
            memory_max=memory_max,
            original_sha256=original_sha256,
            imports=imports,
            manifest=stored_manifest,
            created_by=created_by,
        )
        return kernel, True


def _check_gpu_kernel(data: bytes, manifest: bytes | str | dict[str, Any] | None) -> dict[str, Any]:
    """A gpu kernel's checks, in order (the first failure is the error): the manifest parses
    against the contract (kernelhost.gpu.GpuManifest: fields, types, caps); the WGSL text is
    UTF-8 and declares the entry point, its @workgroup_size and the contract's bindings; and,
    where this server has wgpu and an adapter (any, software included: only its WGSL front end,
    naga, is used), the module compiles and a compute pipeline with the contract's bind group
    layout is created from it. Returns the manifest with defaults filled in, as stored."""
    from kernelhost import KernelRejected, gpuhost
    from kernelhost.gpu import check_source, parse_manifest

    if manifest is None:
        raise ServiceError(
            "A gpu kernel needs its manifest (JSON: workgroup_size, output_bytes, and optionally"
            " entry_point, invocations, float)."
        )
    try:
        parsed = parse_manifest(manifest)
        cap = int(limits()["RESULT_MAX_BYTES"])
        if parsed.buffer_bytes is not None and parsed.buffer_bytes > cap:
            # The output is the result: a larger one could never be accepted.
            raise KernelRejected(
                f"The manifest's output_bytes ({parsed.buffer_bytes}) exceeds this platform's"
                f" result limit of {cap} bytes."
            )
        source = check_source(data, parsed)
        if gpuhost.compile_check(source, parsed) is None:
            log.info("gpu kernel checked without a WGSL compiler (no wgpu adapter here)")
    except KernelRejected as exc:
        reason = exc.reason[:1].lower() + exc.reason[1:]
        raise ServiceError(f"The kernel was rejected: {reason}") from None
    return parsed.to_json()
