"""`pipeline.py submit` as a user types it, against a fake KFP API over real HTTP (kfp.Client on the other side)."""

import pytest
import yaml

import pipeline

# kfp.Client warns on every construction that it needs a v2 backend; the fake is one.
pytestmark = pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")


def test_submit_sends_the_committed_spec_every_parameter_and_a_model_name_from_the_dataset(kfp_api, capsys):
    committed = pipeline.PIPELINE_FILE.read_bytes()
    code = pipeline.main(
        [
            *("submit", "--endpoint", kfp_api.base_url, "--experiment", "churn"),
            *("--arg", "dataset=https://data.example/exports/churn.csv", "--arg", "label_column=churned"),
            *("--arg", "model_family=random_forest", "--arg", 'hyperparameters={"n_estimators": 7}'),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "started run run-1" in capsys.readouterr().out
    (run,) = kfp_api.runs()
    sent = run["runtime_config"]["parameters"]
    assert sent["model_name"] == "sklearn-churn", "not sklearn-iris: a CSV run must not replace the Iris model"
    assert sent["deploy_target"] == "kubernetes"
    assert sent["hyperparameters"] == {"n_estimators": 7}
    assert set(sent) == set(pipeline.pipeline_defaults()), "every parameter, explicit"
    # The uploaded spec is the committed one (default image), and compiling for it left the file untouched.
    # kfp.Client sends the spec and the platform spec (the champion step's Secret as env) as one object.
    spec, platform = yaml.safe_load_all(committed)
    assert run["pipeline_spec"] == {"pipeline_spec": spec, "platform_spec": platform}
    assert pipeline.PIPELINE_FILE.read_bytes() == committed
