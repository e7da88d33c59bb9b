"""Guards a mutation run found untested in service/settings.py."""
import pytest
from pydantic import ValidationError

from service.settings import Settings


@pytest.mark.parametrize("host", ["", " ", "\t"])
def test_a_blank_host_is_refused(host):
    with pytest.raises(ValidationError, match="expected an address or host name"):
        Settings(host=host)


def test_a_comma_list_of_models_ignores_empty_entries():
    assert Settings(models="lfm2, mobilenet_v2,").models == ("lfm2", "mobilenet_v2")
    assert Settings(models=" lfm2 ,,").models == ("lfm2",)


@pytest.mark.parametrize("entry", ["lfm2=", "lfm2= ", "=/models/x"])
def test_a_model_entry_with_an_empty_name_or_path_is_refused(entry):
    with pytest.raises(ValidationError, match="expected NAME or NAME=PATH"):
        Settings(models=(entry,))


@pytest.mark.parametrize("key", ["s3cret\n", "s3cret ", " s3cret", "s3cr\x00et"])
def test_an_api_key_no_header_can_carry_is_refused(key):
    with pytest.raises(ValidationError, match="visible ASCII"):
        Settings(api_key=key)


def test_an_api_key_with_inner_spaces_is_taken():
    assert Settings(api_key="two words").api_key == "two words"


@pytest.mark.parametrize("device", ["cuda:", "cuda:x", "cuda0", "gpu"])
def test_a_device_without_a_gpu_index_after_the_colon_is_refused(device):
    with pytest.raises(ValidationError, match="expected auto, cpu, cuda or cuda:N"):
        Settings(device=device)


def test_a_total_body_budget_of_exactly_one_body_is_taken_and_less_is_refused():
    assert Settings(max_body_bytes=2048, max_total_body_bytes=2048).total_body_limit == 2048
    with pytest.raises(ValidationError, match="expected at least max_body_bytes"):
        Settings(max_body_bytes=2048, max_total_body_bytes=2047)
    assert Settings(max_body_bytes=2048).total_body_limit == 8 * 2048
    assert Settings(max_body_bytes=2048, max_total_body_bytes=4096).total_body_limit == 4096
