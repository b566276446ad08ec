"""Every submit description skyops writes parses with the htcondor2 bindings, with the right keys.

There is no pool here; the bindings' own parser (``htcondor2.Submit``) and ClassAd parser
(``classad2.ExprTree``) are the judges of the text.
"""
from __future__ import annotations

import os
from pathlib import Path

import classad2
import htcondor2
import pytest

from skyops.config import PlatformConfig, Resources
from skyops.errors import ExecutorError
from skyops.executors.base import StepSpec
from skyops.executors.htcondor import arguments_value, environment_value, submit_description, submit_keys
from skyops.steps.registry import get_step

SECRET = "Pr0v-S3cret!"
WORKDIR = "/skyops/scratch/gw_nightly/run 1/se_c05/try1"  # a space, on purpose
EXPRESSIONS = ("on_exit_hold", "on_exit_hold_reason", "on_exit_hold_subcode", "retry_until", "periodic_release")


def platform(**condor: object) -> PlatformConfig:
    return PlatformConfig.model_validate({
        "databases": {"provenance": f"postgresql+psycopg2://skyops:{SECRET}@db/prov"},
        "archive": {"root": "file:///archive/files"},
        "workspace": {"scratch": "/skyops/scratch", "persistent": "/skyops/persistent", "cache": "/skyops/cache"},
        "executors": {"htcondor": {"program": "/opt/skyops/bin/skyops", **condor}},
    })


@pytest.fixture()
def se_spec(monkeypatch: pytest.MonkeyPatch) -> StepSpec:
    monkeypatch.setenv("SKYOPS_PROVENANCE_URL", f"postgresql+psycopg2://skyops:{SECRET}@db/prov")
    monkeypatch.setenv("DES_SERVICES", "/home/skyops/.desservices.ini")
    sdef = get_step("gw.se_ccd")
    return StepSpec("gw.se_ccd", {"ccd": 5}, Path(WORKDIR), sdef.resources,
                    labels={"campaign": "gw_nightly", "unit": "20170817", "step": "gw.se_ccd", "map_index": "4"})


def reparse(sub: htcondor2.Submit) -> htcondor2.Submit:
    """Through the text a human (or condor_submit) would read, and back."""
    return htcondor2.Submit(str(sub))


@pytest.mark.parametrize("universe", ["vanilla", "container"])
def test_description_parses_and_carries_the_step(se_spec: StepSpec, universe: str) -> None:
    cfg = platform(universe=universe, image="registry.example.org/skyops-compute:0.1.0",
                   periodic_release="NumJobStarts < 3 && HoldReasonCode =?= 34", accounting_group="des.gw")
    sub = reparse(submit_description(se_spec, cfg))
    keys = dict(sub.items())
    assert keys["universe"] == universe
    if universe == "container":
        assert keys["container_image"] == "docker://registry.example.org/skyops-compute:0.1.0"
        assert keys["executable"] == "/usr/local/bin/skyops"
    else:
        assert "container_image" not in keys and keys["executable"] == "/opt/skyops/bin/skyops"
    assert keys["transfer_executable"] == "false" and keys["should_transfer_files"] == "NO"
    # resources: cpus, memory in MiB, disk in KiB
    assert (sub.expand("request_cpus"), sub.expand("request_memory"), sub.expand("request_disk")) == \
        ("1", "3072", str(1024 * 1024))
    # the same command as every executor, quoted for a workdir with a space
    assert keys["arguments"] == ("\"step run gw.se_ccd --params '" + WORKDIR + "/params.json' --workdir '"
                                 + WORKDIR + "'\"")
    for k, name in (("log", "condor.log"), ("output", "condor.out"), ("error", "condor.err")):
        assert keys[k] == f"{WORKDIR}/{name}"
    assert keys["initialdir"] == WORKDIR
    # retry policy: retries for failures, none for bad input (exit 2), hold when killed by a signal
    assert keys["max_retries"] == "2" and keys["retry_until"] == "ExitCode == 2"
    for k in EXPRESSIONS:
        classad2.ExprTree(keys[k])  # each is a valid ClassAd expression
    assert str(classad2.ExprTree(keys["on_exit_hold"])) == str(classad2.ExprTree("ExitBySignal =?= true"))
    assert keys["periodic_release"] == "NumJobStarts < 3 && HoldReasonCode =?= 34"
    assert keys["accounting_group"] == "des.gw"
    # identifying attributes in the job ad
    assert keys["MY.SkyopsStep"] == '"gw.se_ccd"' and keys["MY.SkyopsMapIndex"] == "4"
    assert keys["batch_name"] == '"gw_nightly/20170817"'


def test_environment_is_plain_and_credential_free(se_spec: StepSpec) -> None:
    text = str(submit_description(se_spec, platform()))
    assert SECRET not in text and "PROVENANCE_URL" not in text
    env = dict(p.split("=", 1) for p in dict(htcondor2.Submit(text).items())["environment"].strip('"').split())
    assert env["OMP_NUM_THREADS"] == "1" and env["SKYOPS_HOME"] == os.environ["SKYOPS_HOME"]
    assert env["DES_SERVICES"] == "/home/skyops/.desservices.ini"  # a path to a chmod-600 file, not a secret
    se_spec.env = {"ARCHIVE_TOKEN": "abc"}
    with pytest.raises(ExecutorError, match="ARCHIVE_TOKEN looks like a credential"):
        submit_keys(se_spec, platform())


def test_dag_node_description_leaves_retries_to_dagman(se_spec: StepSpec) -> None:
    keys = dict(reparse(htcondor2.Submit(submit_keys(se_spec, platform(hold_on_signal=False),
                                                     retries=False))).items())
    assert "max_retries" not in keys and "retry_until" not in keys and "on_exit_hold" not in keys


def test_container_universe_needs_an_image(se_spec: StepSpec) -> None:
    with pytest.raises(ExecutorError, match="universe 'container' needs image"):
        submit_keys(se_spec, platform(universe="container"))


def test_vanilla_program_must_resolve(se_spec: StepSpec) -> None:
    with pytest.raises(ExecutorError, match="not on this worker's PATH"):
        submit_keys(se_spec, platform(program="no-such-skyops-program"))


def test_quoting_round_trips_through_the_bindings() -> None:
    argv = ["step", "run", "x.y", "--params", "it's here.json", 'say "hi"']
    sub = htcondor2.Submit({"executable": "/bin/true", "arguments": arguments_value(argv),
                            "environment": environment_value({"A": "1", "B": "two words"})})
    assert reparse(sub)["arguments"] == "\"step run x.y --params 'it''s here.json' 'say \"\"hi\"\"'\""
    assert reparse(sub)["environment"] == "\"A=1 B='two words'\""


def test_resources_round_up_cpus_and_keep_tiny_disks() -> None:
    spec = StepSpec("health.check", {}, Path("/skyops/scratch/h"), Resources(cpu=0.1, memory_mb=256, scratch_mb=0))
    sub = submit_description(spec, platform())
    assert (sub["request_cpus"], sub["request_memory"], sub["request_disk"]) == ("1", "256", "1024")
