"""Resources: how sizes, times and counts from a %%remote line are read, checked and shown."""

import json

import pytest

from rx_magic.errors import ResourceError
from rx_magic.model.resources import Resources, format_size, format_size_human, format_walltime, parse_size, parse_walltime

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    "text, nbytes",
    [
        ("8GB", 8 * GiB),
        ("8gb", 8 * GiB),
        ("8G", 8 * GiB),
        ("8GiB", 8 * GiB),
        ("8 GB", 8 * GiB),
        ("1.5GB", 1610612736),
        (".5GB", 512 * MiB),
        ("512MB", 512 * MiB),
        ("512m", 512 * MiB),
        ("512MiB", 512 * MiB),
        ("100KB", 100 * KiB),
        ("100k", 100 * KiB),
        ("100KiB", 100 * KiB),
        ("2TB", 2 * TiB),
        ("2t", 2 * TiB),
        ("2TiB", 2 * TiB),
        ("12B", 12),
        ("12", 12),
        ("4096", 4096),
        ("1.5B", 1),
        ("  8GB  ", 8 * GiB),
        (4096, 4096),
    ],
)
def test_size_accepts_binary_units_in_any_case(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["8XB", "8 gigs", "GB", "eight", "", "8GB8", "1e3", "-1GB", "8..5GB", "8.GB", "inf"])
def test_size_rejects_malformed_text_naming_option_value_and_examples(text):
    with pytest.raises(ResourceError) as caught:
        parse_size(text, "--mem")
    message = str(caught.value)
    assert message.startswith(f"--mem {text!r} is not a size")
    assert "8GB" in message and "1GB = 1024 MB" in message


def test_size_message_matches_the_documented_wording():
    with pytest.raises(ResourceError, match=r"^--mem '8XB' is not a size: use a number and a unit, e\.g\. 512MB, 8GB, 1\.5GB \(binary units: 1GB = 1024 MB\)$"):
        Resources.parse(mem="8XB")


@pytest.mark.parametrize("value", ["0", "0GB", "0.0001B", 0, -5])
def test_size_must_be_at_least_one_byte(value):
    with pytest.raises(ResourceError, match=rf"^--jobfs '{value}' must be at least 1 byte: .*e\.g\. 512MB"):
        parse_size(value, "--jobfs")


@pytest.mark.parametrize("value", [True, 8.5, None])
def test_size_rejects_values_that_are_neither_text_nor_int(value):
    with pytest.raises(ResourceError, match="is not a size"):
        parse_size(value, "--mem")


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("2:00:00", 7200),
        ("02:00:00", 7200),
        ("48:00:00", 172800),
        ("0:01:30", 90),
        ("1:30", 90),
        ("59:59", 3599),
        ("1-12:00:00", 129600),
        ("0-00:00:45", 45),
        ("90m", 5400),
        ("2h", 7200),
        ("1h30m", 5400),
        ("45s", 45),
        ("1d", 86400),
        ("1d12h", 129600),
        ("1d2h3m4s", 93784),
        ("2H", 7200),
        (" 2h ", 7200),
        (5400, 5400),
    ],
)
def test_walltime_accepts_clock_and_unit_forms(text, seconds):
    assert parse_walltime(text) == seconds


def test_walltime_accepts_minutes_suffix():
    assert Resources.parse(walltime="90m").walltime == 90 * 60


@pytest.mark.parametrize(
    "text",
    ["99:99", "1:99:00", "1:00:60", "60:00", "1-24:00:00", "1-12:30", "2h30", "30m1h", "1.5h", "2 hours", "", "h", "-1h", "1:2:3:4"],
)
def test_walltime_rejects_malformed_text_naming_option_value_and_forms(text):
    with pytest.raises(ResourceError) as caught:
        parse_walltime(text, "--walltime")
    message = str(caught.value)
    assert message.startswith(f"--walltime {text!r} is not a time")
    assert "2:00:00" in message and "1h30m" in message and "D-HH:MM:SS" in message


def test_walltime_message_matches_the_documented_wording():
    with pytest.raises(ResourceError, match=r"^--walltime '99:99' is not a time: use HH:MM:SS \(e\.g\. 2:00:00\), MM:SS, D-HH:MM:SS, or 90m, 2h, 1h30m, 45s$"):
        Resources.parse(walltime="99:99")


def test_walltime_rejects_a_bare_number_as_ambiguous_and_suggests_both_readings():
    with pytest.raises(ResourceError) as caught:
        Resources.parse(walltime="90")
    message = str(caught.value)
    assert message.startswith("--walltime '90' is ambiguous")
    assert "90m" in message and "0:01:30" in message


@pytest.mark.parametrize("value", ["0:00:00", "0m", "0", 0, -60])
def test_walltime_must_be_more_than_zero(value):
    with pytest.raises(ResourceError, match=rf"^--walltime '{value}' must be more than zero: .*2:00:00"):
        parse_walltime(value, "--walltime")


@pytest.mark.parametrize("option, value, parsed", [("ncpus", "4", 4), ("ncpus", 1, 1), ("ncpus", " 48 ", 48), ("ngpus", "0", 0), ("ngpus", 2, 2)])
def test_counts_accept_whole_numbers_as_text_or_int(option, value, parsed):
    assert getattr(Resources.parse(**{option: value}), option) == parsed


@pytest.mark.parametrize(
    "option, value, minimum",
    [("ncpus", "four", 1), ("ncpus", "0", 1), ("ncpus", 0, 1), ("ncpus", "-1", 1), ("ncpus", "2.5", 1), ("ncpus", 2.5, 1),
     ("ncpus", True, 1), ("ngpus", "-1", 0), ("ngpus", -1, 0), ("ngpus", "one", 0), ("ngpus", "", 0)],
)
def test_counts_reject_anything_but_a_whole_number_in_range(option, value, minimum):
    with pytest.raises(ResourceError) as caught:
        Resources.parse(**{option: value})
    message = str(caught.value)
    assert message.startswith(f"--{option} {str(value)!r} is not a count")
    assert f"whole number of {minimum} or more, e.g. 4" in message


@pytest.mark.parametrize(
    "option, value",
    [("name", "fit_model-2.v1"), ("name", "a"), ("name", "a" * 64), ("queue", "normal"), ("queue", "gpuvolta"),
     ("queue", "copy+q.1-x_y"), ("project", "a56"), ("project", "pawsey0001"), ("storage", "scratch/a56"),
     ("storage", "scratch/a56+gdata/a56"), ("storage", "massdata/a56+gdata/xy_12")],
)
def test_names_queues_projects_and_storage_accept_scheduler_safe_text(option, value):
    assert getattr(Resources.parse(**{option: value}), option) == value


@pytest.mark.parametrize(
    "option, value, example",
    [("name", "2fit", "fit_model-2"), ("name", "my job", "fit_model-2"), ("name", "a" * 65, "fit_model-2"),
     ("name", "x/../y", "fit_model-2"), ("name", "a\nb", "fit_model-2"), ("name", "", "fit_model-2"),
     ("queue", "", "normal"), ("queue", "nor mal", "normal"), ("queue", "q;rm", "normal"), ("queue", "q" * 65, "normal"),
     ("project", "a56'", "a56"), ("project", "$(id)", "a56")],
)
def test_names_queues_and_projects_reject_unsafe_text_saying_what_is_allowed(option, value, example):
    with pytest.raises(ResourceError) as caught:
        Resources.parse(**{option: value})
    message = str(caught.value)
    assert message.startswith(f"--{option} {value!r} is not allowed")
    assert "letters, digits" in message and f"e.g. {example}" in message


@pytest.mark.parametrize("value", ["scratch", "scratch/a56+", "scratch/a56 gdata/a56", "Scratch/a56", "scratch/a-56", "/a56", ""])
def test_storage_rejects_items_that_are_not_filesystem_slash_project(value):
    with pytest.raises(ResourceError) as caught:
        Resources.parse(storage=value)
    message = str(caught.value)
    assert message.startswith(f"--storage {value!r} is not a storage list")
    assert "e.g. scratch/a56+gdata/a56" in message


def test_extra_directives_are_kept_raw_but_stripped():
    assert Resources.parse(extra=["  -l wd ", "-W umask=022"]).extra == ("-l wd", "-W umask=022")
    assert Resources.parse(extra="--constraint=a100").extra == ("--constraint=a100",)


@pytest.mark.parametrize("value", ["", "   ", "-l wd\n-l other", "a\rb", "a\0b"])
def test_extra_rejects_empty_or_multi_line_directives(value):
    with pytest.raises(ResourceError) as caught:
        Resources.parse(extra=[value])
    message = str(caught.value)
    assert message.startswith(f"--extra {value!r} is not a directive")
    assert "one non-empty line, e.g. '-l wd'" in message


def test_parse_leaves_unset_fields_unset():
    assert Resources.parse() == Resources()
    assert Resources.parse(mem="4GB") == Resources(mem=4 * GiB)


def test_resources_are_immutable():
    with pytest.raises(AttributeError):
        Resources().mem = 1


def test_fields_set_on_the_cell_win_over_defaults():
    defaults = Resources.parse(mem="4GB", walltime="01:00:00", queue="normal", ncpus=1, extra=["-l wd"])
    cell = Resources.parse(mem="8GB", ncpus=4, ngpus=0, extra=["-m abe"])
    merged = cell.over(defaults)
    assert merged == Resources(mem=8 * GiB, ncpus=4, ngpus=0, walltime=3600, queue="normal", extra=("-l wd", "-m abe"))


def test_over_empty_defaults_changes_nothing_and_empty_cell_takes_all_defaults():
    cell = Resources.parse(mem="8GB", extra=["-l wd"])
    assert cell.over(Resources()) == cell
    assert Resources().over(cell) == cell


def test_to_json_holds_only_the_set_fields_as_plain_values():
    resources = Resources.parse(mem="8GB", ncpus=4, walltime="2h", storage="scratch/a56", extra=["-l wd"])
    assert resources.to_json() == {"mem": 8 * GiB, "ncpus": 4, "walltime": 7200, "storage": "scratch/a56", "extra": ["-l wd"]}
    assert Resources().to_json() == {}


def test_json_round_trip_gives_back_equal_resources():
    resources = Resources.parse(mem="1.5GB", ncpus="4", ngpus="1", walltime="1-00:00:00", queue="gpuvolta",
                                project="a56", jobfs="100GB", storage="scratch/a56+gdata/a56", name="fit", extra=["-l wd"])
    assert Resources.from_json(json.loads(json.dumps(resources.to_json()))) == resources
    assert Resources.from_json({}) == Resources()


def test_from_json_rejects_unknown_fields():
    with pytest.raises(ResourceError, match="unknown resource fields \\['memory'\\]"):
        Resources.from_json({"memory": 1})


def test_describe_summarises_set_fields_for_people():
    resources = Resources.parse(mem="8GB", ncpus=4, ngpus=1, walltime="2:00:00", queue="normal")
    assert resources.describe() == "mem 8 GiB, 4 cpus, 1 gpu, walltime 2:00:00, queue normal"
    everything = Resources.parse(ncpus=1, ngpus=2, project="a56", jobfs="1.5GB", storage="gdata/a56", name="fit", extra=["-l wd", "-m n"])
    assert everything.describe() == "1 cpu, 2 gpus, project a56, jobfs 1.5 GiB, storage gdata/a56, name fit, extra -l wd; -m n"
    assert Resources().describe() == ""


@pytest.mark.parametrize(
    "nbytes, text",
    [(8 * GiB, "8GB"), (512 * MiB, "512MB"), (1536 * MiB, "1536MB"), (100 * KiB, "100KB"), (1023, "1023B"),
     (2 * TiB, "2TB"), (1025, "1025B"), (1, "1B")],
)
def test_format_size_uses_the_largest_binary_unit_that_divides_exactly(nbytes, text):
    assert format_size(nbytes) == text


@pytest.mark.parametrize("text, rendered", [("8GB", "8GB"), ("512MB", "512MB"), ("1.5GB", "1536MB"), ("8g", "8GB"), ("1024MB", "1GB")])
def test_format_size_round_trips_through_parse_size(text, rendered):
    assert format_size(parse_size(text)) == rendered
    assert parse_size(format_size(parse_size(text))) == parse_size(text)


@pytest.mark.parametrize(
    "nbytes, text",
    [(8 * GiB, "8 GiB"), (1536 * MiB, "1.5 GiB"), (512 * MiB, "512 MiB"), (1_000_000, "977 KiB"), (12, "12 B"),
     (1023, "1023 B"), (1024, "1 KiB"), (10 * MiB + 300 * KiB, "10.3 MiB"), (MiB - 40, "1 MiB"), (3 * TiB, "3 TiB"),
     (2048 * TiB, "2048 TiB")],
)
def test_format_size_human_shows_one_decimal_at_most(nbytes, text):
    assert format_size_human(nbytes) == text


@pytest.mark.parametrize("seconds, text", [(7200, "2:00:00"), (90, "0:01:30"), (172800, "48:00:00"), (45, "0:00:45"), (3599, "0:59:59")])
def test_format_walltime_renders_hours_minutes_seconds(seconds, text):
    assert format_walltime(seconds) == text
    assert parse_walltime(text) == seconds
