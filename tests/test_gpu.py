"""GPU kernels (issue 15), server side: the manifest and WGSL checks at upload, the blob, the
capabilities a hello reports, and the scheduler keeping gpu (and too-large) campaigns from
sessions that cannot run them."""

from __future__ import annotations

import json

import pytest

from campaigns import services
from campaigns.inputs import TaskSpec
from campaigns.models import Kernel
from kernelhost import KernelRejected
from kernelhost.gpu import check_source, parse_manifest, resolve
from kernelhost.gpuhost import wgpu_installed
from tests.conftest import kernel_bytes
from tests.skips import needs
from workers import protocol, scheduler, sessions
from workers.models import WorkerSession
from workers.scheduler import LeaseRequest, SessionInfo

DOUBLE = b"""
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= params.invocations) { return; }
  output[gid.x] = input[gid.x] * 2u;
}
"""
MANIFEST = {"workgroup_size": 64, "output_bytes": "input"}
GPU = protocol.GpuInfo(
    adapter="test adapter", max_buffer=1 << 27, max_workgroups=65535, max_invocations=256
)
needs_wgpu = needs(not wgpu_installed(), "the gpu extra is not installed")


@pytest.fixture(autouse=True)
def _fresh_directory():
    scheduler.work_available()


def gpu_kernel(people, source=DOUBLE, manifest=None):
    return services.kernel_upload(
        organization=people.org,
        name="double",
        data=source,
        kind=Kernel.Kind.GPU,
        manifest=manifest or MANIFEST,
    )


def running(people, kernel, inputs=(b"\1\0\0\0",)):
    campaign = services.campaign_create(
        organization=people.org, name="gpu", kernel=kernel, approved=True
    )
    services.tasks_add(campaign=campaign, specs=[TaskSpec(input=i) for i in inputs])
    services.campaign_start(campaign=campaign)
    return campaign


def session(**caps):
    s = WorkerSession.objects.create(kind="native")
    return SessionInfo(id=s.pk, **caps)


# --- the contract's checks -------------------------------------------------------------------


def test_manifest_defaults_are_filled_in_and_mistakes_named():
    m = parse_manifest(json.dumps(MANIFEST))
    assert m.to_json() == {
        "workgroup_size": 64,
        "output_bytes": "input",
        "entry_point": "main",
        "invocations": "output_words",
        "float": False,
    }
    for bad, says in (
        ({"workgroup_size": 512, "output_bytes": 4}, "workgroup_size"),
        ({"workgroup_size": 64, "output_bytes": 6}, "multiple of 4"),
        ({"workgroup_size": 64, "output_bytes": 4, "buffers": 3}, "unknown field `buffers`"),
        ({"workgroup_size": 64, "output_bytes": 4, "invocations": "all"}, "invocations"),
        ({"output_bytes": 4}, "workgroup_size"),
    ):
        with pytest.raises(KernelRejected, match=says):
            parse_manifest(bad)


def test_dispatch_pads_the_input_and_guards_its_size():
    m = parse_manifest(MANIFEST)
    d = resolve(m, 5)
    assert (d.padded_input, d.output_bytes, d.invocations, d.workgroups) == (8, 8, 2, 1)
    assert resolve(m, 0).padded_input == 4
    big = parse_manifest({"workgroup_size": 1, "output_bytes": 4, "invocations": 65536})
    with pytest.raises(ValueError, match="dispatch too large"):
        resolve(big, 4)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ((b"@workgroup_size(64)", b"@workgroup_size(32)"), "workgroup_size\\(64\\)"),
        ((b"fn main(", b"fn start("), "no @compute function 'main'"),
        ((b"var<storage, read> input", b"var<storage, read_write> input"), "binding\\(0\\)"),
        ((b"@binding(2) var<uniform>", b"@binding(3) var<uniform>"), "binding\\(3\\)"),
    ],
)
def test_wgsl_text_checks_name_the_failed_check(change, says):
    with pytest.raises(KernelRejected, match=says):
        check_source(DOUBLE.replace(*change), parse_manifest(MANIFEST))


# --- upload ----------------------------------------------------------------------------------


def test_a_gpu_kernel_is_stored_with_its_manifest_and_served_as_wgsl(people, client):
    kernel = gpu_kernel(people)
    assert kernel.kind == "gpu" and kernel.memory_max is None
    assert kernel.manifest == parse_manifest(MANIFEST).to_json()
    response = client.get(f"/blobs/{kernel.sha256}.wgsl")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/wgsl")
    assert response.content == DOUBLE


def test_a_gpu_kernel_needs_a_valid_manifest_and_only_it_takes_one(people):
    with pytest.raises(services.ServiceError, match="needs its manifest"):
        services.kernel_upload(organization=people.org, name="k", data=DOUBLE, kind=Kernel.Kind.GPU)
    with pytest.raises(services.ServiceError, match="manifest is invalid"):
        gpu_kernel(people, manifest={"workgroup_size": 0, "output_bytes": 4})
    with pytest.raises(services.ServiceError, match="exceeds this platform's result limit"):
        gpu_kernel(people, manifest={"workgroup_size": 64, "output_bytes": 64 * 1024 * 1024})
    with pytest.raises(services.ServiceError, match="Only a gpu kernel"):
        services.kernel_upload(
            organization=people.org, name="e", data=kernel_bytes("echo"), manifest=MANIFEST
        )


def test_the_same_wgsl_with_another_manifest_is_refused(people):
    first = gpu_kernel(people)
    assert gpu_kernel(people) == first
    with pytest.raises(services.ServiceError, match="another manifest"):
        gpu_kernel(people, manifest={**MANIFEST, "float": True})


@needs_wgpu
def test_wgsl_that_does_not_compile_is_refused_with_the_compilers_message(people):
    broken = DOUBLE.replace(b"input[gid.x] * 2u", b"input[gid.x] * 2.0")
    with pytest.raises(services.ServiceError, match="does not compile"):
        gpu_kernel(people, source=broken)


# --- capabilities and leases -----------------------------------------------------------------


def test_hello_capabilities_are_kept_on_the_session(db):
    hello = protocol.Hello(v=2, kind="browser", slots=2, gpu=GPU, memory=1 << 30)
    s, _ = sessions.session_open(hello, user=None)
    s.refresh_from_db()
    info = sessions.session_info(s)
    assert info.gpu == GPU and info.memory == 1 << 30
    bare, _ = sessions.session_open(protocol.Hello(v=2, kind="browser", slots=2), user=None)
    assert sessions.session_info(bare).gpu is None


def test_a_hello_frame_with_gpu_decodes_and_an_old_one_still_does():
    frame = protocol.encode(protocol.Hello(v=2, kind="native", slots=1, gpu=GPU, memory=5))
    hello = protocol.decode(frame)
    assert isinstance(hello, protocol.Hello) and hello.gpu == GPU and hello.memory == 5
    old = protocol.decode(protocol.encode({"t": "hello", "v": 1, "kind": "native", "slots": 1}))
    assert isinstance(old, protocol.Hello) and old.gpu is None and old.memory is None


def test_gpu_campaigns_are_leased_only_to_sessions_with_an_adapter(people):
    campaign = running(people, gpu_kernel(people), inputs=[b"\1\0\0\0"] * 3)
    assert scheduler.lease(session(), 5) == []
    assert len(scheduler.lease(session(gpu=GPU, memory=1 << 20), 1)) == 1
    leases, descriptors = scheduler.lease_for_session(session(gpu=GPU), 5, set())
    assert leases and descriptors[campaign.pk].gpu == parse_manifest(MANIFEST)
    assert descriptors[campaign.pk].kind == "gpu"


def test_lease_many_skips_sessions_without_gpu(people):
    running(people, gpu_kernel(people), inputs=[b"\1\0\0\0"] * 4)
    plain, capable = session(), session(gpu=GPU)
    got = scheduler.lease_many([LeaseRequest(session=plain, n=2), LeaseRequest(capable, 2)])
    assert plain.id not in got and len(got[capable.id][0]) == 2


def test_a_gpu_kernel_whose_buffers_exceed_the_adapters_is_not_leased(people):
    kernel = gpu_kernel(people, manifest={"workgroup_size": 64, "output_bytes": 1 << 20})
    running(people, kernel)
    small = protocol.GpuInfo(
        adapter="small", max_buffer=1 << 16, max_workgroups=65535, max_invocations=256
    )
    narrow = protocol.GpuInfo(
        adapter="narrow", max_buffer=1 << 27, max_workgroups=65535, max_invocations=32
    )
    assert scheduler.lease(session(gpu=small), 1) == []
    assert scheduler.lease(session(gpu=narrow), 1) == []
    assert len(scheduler.lease(session(gpu=GPU), 1)) == 1


def test_a_kernel_needing_more_memory_than_a_session_offers_never_reaches_it(make_campaign):
    campaign = make_campaign(["a", "b"])
    assert campaign.kernel.memory_max == 64 * 1024 * 1024
    assert scheduler.lease(session(memory=32 * 1024 * 1024), 2) == []
    assert len(scheduler.lease(session(memory=64 * 1024 * 1024), 1)) == 1
    assert len(scheduler.lease(session(), 1)) == 1  # memory not stated: no limit


# --- the API, and what a campaign of a gpu kernel gets ----------------------------------------


@pytest.fixture
def api(people):
    from django.test import Client

    from accounts import services as account_services

    raw = account_services.token_issue(organization=people.org, name="t", created_by=None)[1]
    return Client(headers={"Authorization": f"Bearer {raw}"})


def test_the_api_takes_wgsl_with_its_manifest_as_a_raw_body_or_a_form(api):
    manifest = json.dumps(MANIFEST)
    raw = api.post(
        f"/api/v1/kernels?name=double&manifest={manifest}",
        data=DOUBLE,
        content_type="text/wgsl",
    )
    assert raw.status_code == 201, raw.content
    body = raw.json()
    assert body["kind"] == "gpu" and body["manifest"]["entry_point"] == "main"
    assert body["download_url"].endswith(f"/blobs/{body['sha256']}.wgsl")
    from django.core.files.uploadedfile import SimpleUploadedFile

    other = DOUBLE.replace(b"* 2u", b"* 3u")
    form = api.post(
        "/api/v1/kernels",
        {
            "file": SimpleUploadedFile("triple.wgsl", other),
            "kind": "gpu",
            "manifest": json.dumps({**MANIFEST, "float": False}),
        },
    )
    assert form.status_code == 201, form.content
    assert form.json()["name"] == "triple"
    missing = api.post("/api/v1/kernels?kind=gpu", data=other + b"//", content_type="text/wgsl")
    assert missing.status_code == 400 and "needs its manifest" in missing.content.decode()


def test_a_float_gpu_campaign_gets_the_tolerance_verifier_by_default(people):
    kernel = gpu_kernel(people, manifest={**MANIFEST, "float": True})
    campaign = services.campaign_create(
        organization=people.org, name="f", kernel=kernel, env={"VERIFY_RTOL": "1e-4"}
    )
    assert campaign.verifier is not None and campaign.verifier.name == "float_verify"
    assert campaign.env == {"VERIFY_FORMAT": "f32", "VERIFY_RTOL": "1e-4", "VERIFY_ATOL": "1e-6"}
    exact = services.campaign_create(
        organization=people.org, name="i", kernel=gpu_kernel(people, source=DOUBLE + b"// i")
    )
    assert exact.verifier is None and exact.env == {}
    with pytest.raises(services.ServiceError, match="no arguments or static data"):
        services.campaign_create(organization=people.org, name="a", kernel=kernel, args=["-n"])


def test_the_f32_tolerance_verifier_groups_outputs_within_tolerance():
    import struct

    from campaigns.services.creation import FLOAT_VERIFIER, GPU_FLOAT_ENV
    from kernelhost import default_host
    from rewards.verifier import frames, parse_verdicts

    a = struct.pack("<3f", 1.0, float("nan"), -2.5)
    close = struct.pack("<3f", 1.000001, float("nan"), -2.5)
    far = struct.pack("<3f", 1.01, float("nan"), -2.5)
    ragged = a + b"\0"
    result = default_host().run(
        FLOAT_VERIFIER.read_bytes(),
        stdin=frames([b"", a, close, far, ragged]),
        argv0="verifier",
        env=GPU_FLOAT_ENV,
    )
    assert result.ok, result.message
    assert parse_verdicts(result.stdout, 4) == [1, 1, 3, 0]


def test_the_kernels_page_takes_wgsl_with_its_manifest(people):
    import io

    from django.urls import reverse

    from tests.test_owner_ui import client_for

    client = client_for(people.teammate)
    url = reverse("campaigns:kernel_list", args=["alpha"])
    wgsl = io.BytesIO(DOUBLE)
    wgsl.name = "double.wgsl"
    response = client.post(url, {"file": wgsl, "kind": "gpu", "manifest": json.dumps(MANIFEST)})
    assert response.status_code == 302
    kernel = people.org.kernels.get()
    assert (kernel.name, kernel.kind, kernel.manifest["workgroup_size"]) == ("double", "gpu", 64)
    page = client.get(url).content.decode()
    assert 'id="manifest-field"' in page
    wgsl = io.BytesIO(DOUBLE + b"// 2")
    wgsl.name = "double2.wgsl"
    refused = client.post(url, {"file": wgsl, "kind": "gpu", "manifest": "{"})
    assert (
        refused.status_code == 200
        and "the manifest is not a JSON object" in refused.content.decode()
    )
