"""TF Serving's text formats and arena's version-policy strings."""

from __future__ import annotations

import pytest

from tidal.errors import UserError
from tidal.models.config import (
    BatchingOptions, ModelConfig, VersionPolicy, load_batching_parameters_file, load_model_config_file,
    parse_batching_parameters, parse_model_config_list,
)
from tidal.models.textproto import Ident, Message, TextFormatError, parse

# ---- the generic reader ---------------------------------------------------------------------

TEXT_CASES = [
    ("scalars", "a: 1 b: -2.5 c: 'x' d: \"y\" e: true f: 0x1F g: 1e3",
     [("a", 1), ("b", -2.5), ("c", "x"), ("d", "y"), ("e", "true"), ("f", 31), ("g", 1000.0)]),
    ("string escapes and concatenation", r"s: 'a\'b' 'c\n' t: '\101'", [("s", "a'bc\n"), ("t", "A")]),
    ("repeated list syntax", "v: [1, 2, 3]", [("v", 1), ("v", 2), ("v", 3)]),
    ("separators and comments", "a: 1; # comment\nb: 2,", [("a", 1), ("b", 2)]),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_reader_scalars(text, expected):
    msg = parse(text)
    assert [(f.name, f.value) for f in msg.fields] == expected


def test_reader_nested_messages_with_and_without_colon_and_angle_brackets():
    msg = parse("outer {\n inner: { x: 1 }\n other < y: 2 >\n}")
    outer = msg.fields[0].value
    assert isinstance(outer, Message)
    assert [f.name for f in outer.fields] == ["inner", "other"]
    assert outer.fields[0].value.fields[0].value == 1
    assert outer.fields[1].line == 3


def test_reader_identifiers_are_marked():
    (f,) = parse("kind: TENSORFLOW").fields
    assert isinstance(f.value, Ident) and f.value == "TENSORFLOW"


BAD_TEXT = [
    ("unclosed brace", "a {\n b: 1\n", 3, "missing '}' for the message opened on line 1"),
    ("stray closer", "a: 1\n}", 2, "expected a field name, found '}'"),
    ("missing value", "a:\n", 2, "expected a value, found end of input"),
    ("no colon", "a 1", 1, "expected ':' or '{' after 'a'"),
    ("bad character", "a: 1\nb: @", 2, "unexpected character '@'"),
    ("unterminated string", "a: 'abc\n", 1, "unexpected character \"'\""),
    ("bad list", "a: [1 2]", 1, "expected ',' or ']'"),
]


@pytest.mark.parametrize("text,line,fragment", [c[1:] for c in BAD_TEXT], ids=[c[0] for c in BAD_TEXT])
def test_reader_errors_name_the_line(text, line, fragment):
    with pytest.raises(TextFormatError) as e:
        parse(text)
    assert e.value.line == line
    assert fragment in str(e.value)


# ---- model_config_list -----------------------------------------------------------------------

FULL = """
model_config_list {
  config {
    name: 'x'
    base_path: '/m/x'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: 'stable' value: 1 }
    version_labels { key: 'canary' value: 2 }
  }
  config {
    name: "y"
    base_path: "s3://bucket/y"
    model_version_policy { latest { num_versions: 2 } }
  }
  config { name: 'z' base_path: '/m/z' model_version_policy { all {} } }
  config { name: 'w' base_path: '/m/w' }
}
"""


def test_model_config_list_full_example():
    x, y, z, w = parse_model_config_list(FULL)
    assert x == ModelConfig(name="x", base_path="/m/x", platform="tensorflow",
                            version_policy=VersionPolicy(kind="specific", versions=(1, 2)),
                            version_labels={"stable": 1, "canary": 2})
    assert y.version_policy == VersionPolicy(kind="latest", num_versions=2)
    assert z.version_policy == VersionPolicy(kind="all")
    assert w.version_policy == VersionPolicy() and w.platform == "" and w.version_labels == {}


def test_model_config_list_the_issue_one_liner():
    (cfg,) = parse_model_config_list(
        "model_config_list { config { name: 'x' base_path: '/m' model_platform: 'tensorflow' "
        "model_version_policy { specific { versions: 1 versions: 2 } } version_labels { key: 'stable' value: 1 } } }")
    assert cfg.version_policy.versions == (1, 2) and cfg.version_labels == {"stable": 1}


def test_model_type_enum_is_read_as_platform():
    (cfg,) = parse_model_config_list("model_config_list { config { name: 'a' base_path: '/a' model_type: TENSORFLOW } }")
    assert cfg.platform == "tensorflow"


BAD_CONFIGS = [
    ("empty file", "", "cfg:1: expected 'model_config_list"),
    ("unknown top field", "foo {}", "cfg:1: unknown field 'foo'"),
    ("unknown config field", "model_config_list {\n config {\n  name: 'a'\n  base_pth: '/a'\n }\n}",
     "cfg:4: unknown field 'base_pth' in config"),
    ("missing base_path", "model_config_list {\n config { name: 'a' }\n}", "cfg:2: config is missing 'base_path'"),
    ("name not a string", "model_config_list { config { name: 5 base_path: '/a' } }", "'name' must be a quoted string"),
    ("duplicate model", "model_config_list {\n config { name: 'a' base_path: '/a' }\n config { name: 'a' base_path: '/b' }\n}",
     "cfg:3: model 'a' is configured more than once"),
    ("two policies", "model_config_list { config { name: 'a' base_path: '/a'\n model_version_policy { all {} latest {} } } }",
     "needs exactly one of: latest, all, specific"),
    ("empty specific", "model_config_list { config { name: 'a' base_path: '/a'\n model_version_policy { specific { } } } }",
     "cfg:2: specific { } needs at least one"),
    ("zero latest", "model_config_list { config { name: 'a' base_path: '/a'\n model_version_policy { latest { num_versions: 0 } } } }",
     "cfg:2: num_versions must be at least 1"),
    ("label without value", "model_config_list { config { name: 'a' base_path: '/a'\n version_labels { key: 'x' } } }",
     "cfg:2: version_labels needs"),
    ("slash in name", "model_config_list { config { name: 'a/b' base_path: '/a' } }", "may not contain '/'"),
    ("syntax error", "model_config_list {\n config {\n name: 'a'\n", "cfg:4: missing '}'"),
    ("custom config", "custom_model_config {}", "custom_model_config is not supported"),
]


@pytest.mark.parametrize("text,fragment", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_model_config_list_errors(text, fragment):
    with pytest.raises(UserError) as e:
        parse_model_config_list(text, source="cfg")
    assert fragment in str(e.value)


def test_config_file_from_disk_and_missing_file(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { name: 'a' base_path: '/a' } }")
    assert load_model_config_file(str(path))[0].name == "a"
    with pytest.raises(UserError, match="no such file"):
        load_model_config_file(str(tmp_path / "absent.config"))


# ---- version policy strings ------------------------------------------------------------------

POLICIES = [
    ("latest", VersionPolicy(kind="latest", num_versions=1), "latest"),
    ("latest:3", VersionPolicy(kind="latest", num_versions=3), "latest:3"),
    (" LATEST : 2 ", VersionPolicy(kind="latest", num_versions=2), "latest:2"),
    ("all", VersionPolicy(kind="all"), "all"),
    ("specific:2", VersionPolicy(kind="specific", versions=(2,)), "specific:2"),
    ("specific:3,1,3", VersionPolicy(kind="specific", versions=(1, 3)), "specific:1,3"),
]


@pytest.mark.parametrize("text,policy,canonical", POLICIES, ids=[p[0] for p in POLICIES])
def test_version_policy_strings(text, policy, canonical):
    assert VersionPolicy.parse(text) == policy
    assert str(policy) == canonical


@pytest.mark.parametrize("text", ["latest:0", "latest:x", "specific", "specific:", "specific:a,1", "all:2", "newest", ""])
def test_bad_version_policy_strings(text):
    with pytest.raises(UserError, match="bad version policy"):
        VersionPolicy.parse(text)


# ---- batching parameters ---------------------------------------------------------------------

def test_batching_defaults_are_tf_servings():
    opts = parse_batching_parameters("")
    assert (opts.max_batch_size, opts.batch_timeout_micros, opts.max_enqueued_batches) == (1000, 0, 10)
    assert opts.num_batch_threads is None  # TF: one per core; here sized against the runtime's threads
    assert opts.allowed_batch_sizes == () and opts.pad_variable_length_inputs is False and opts.enabled


def test_batching_full_file():
    opts = parse_batching_parameters(
        "max_batch_size { value: 128 }\n"
        "batch_timeout_micros { value: 500 }\n"
        "max_enqueued_batches { value: 4 }\n"
        "num_batch_threads { value: 2 }\n"
        "allowed_batch_sizes: 32\nallowed_batch_sizes: 64\nallowed_batch_sizes: 128\n"
        "pad_variable_length_inputs: true\n"
        "thread_pool_name { value: 'batch' }\n")
    assert opts == BatchingOptions(max_batch_size=128, batch_timeout_micros=500, max_enqueued_batches=4,
                                   num_batch_threads=2, allowed_batch_sizes=(32, 64, 128),
                                   pad_variable_length_inputs=True)


def test_batching_accepts_unwrapped_numbers():
    assert parse_batching_parameters("max_batch_size: 8").max_batch_size == 8


BAD_BATCHING = [
    ("unknown field", "max_batch_size { value: 8 }\nbatch_size { value: 2 }", "b:2: unknown field 'batch_size'"),
    ("zero batch", "max_batch_size { value: 0 }", "b:1: 'max_batch_size' must be >= 1"),
    ("negative timeout", "batch_timeout_micros { value: -1 }", "'batch_timeout_micros' must be >= 0"),
    ("wrong wrapper", "max_batch_size { val: 8 }", "expected 'max_batch_size { value: N }'"),
    ("float size", "max_batch_size { value: 1.5 }", "must be a whole number"),
    ("sizes not increasing", "max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 2",
     "strictly increasing"),
    ("last size not max", "max_batch_size { value: 8 }\nallowed_batch_sizes: 4", "must equal max_batch_size"),
    ("bad bool", "pad_variable_length_inputs: maybe", "must be true or false"),
    ("repeated field", "max_batch_size { value: 8 }\nmax_batch_size { value: 9 }", "b:2: 'max_batch_size' given more than once"),
]


@pytest.mark.parametrize("text,fragment", [c[1:] for c in BAD_BATCHING], ids=[c[0] for c in BAD_BATCHING])
def test_batching_errors(text, fragment):
    with pytest.raises(UserError) as e:
        parse_batching_parameters(text, source="b")
    assert fragment in str(e.value)


def test_batching_file_from_disk(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 16 }")
    assert load_batching_parameters_file(str(path)).max_batch_size == 16


def test_version_policy_from_its_string_form_in_a_model():
    assert ModelConfig(name="a", base_path="/a", version_policy="latest:2").version_policy.num_versions == 2
    with pytest.raises(ValueError, match="bad version policy"):
        ModelConfig(name="a", base_path="/a", version_policy="newest")
