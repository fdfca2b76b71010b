"""dropkit in a Hugging Face ``Trainer``: late dropout and Monte Carlo scores at each evaluation.

A tiny BERT built from a configuration (nothing is downloaded) learns whether a sequence of
random tokens starts with a token from the upper half of the vocabulary; the CPU is enough::

    python examples/transformers_mc.py

Each evaluation adds ``eval_mc_nll``, ``eval_mc_ece``, ``eval_mc_mutual_information`` and
``eval_mc_accuracy`` (the Monte Carlo predictive) to the metrics beside ``eval_loss``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from dropkit.integrations.transformers import DropkitCallback

VOCAB, LENGTH = 64, 12


class Tokens(torch.utils.data.Dataset):
    """Random token sequences; the label says whether the first token is in the upper half."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
        self.labels = (self.ids[:, 0] >= VOCAB // 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


def tiny_bert(p: float = 0.1) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=LENGTH, num_labels=2,
        hidden_dropout_prob=p, attention_probs_dropout_prob=p,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=256, help="training sequences")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    # Dropout from the second epoch on (the first has none, so its evaluation has no MC scores).
    callback = DropkitCallback(schedule="late", schedule_epochs=1, mc_samples=20)
    with tempfile.TemporaryDirectory() as output_dir:
        training = TrainingArguments(
            output_dir=output_dir,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=32,
            per_device_eval_batch_size=64,
            learning_rate=3e-3,
            eval_strategy="epoch",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=tiny_bert(),
            args=training,
            train_dataset=Tokens(args.train, seed=0),
            eval_dataset=Tokens(128, seed=1),
            callbacks=[callback],
        )
        trainer.train()
        metrics = trainer.evaluate()
    mc = {k: round(v, 3) for k, v in metrics.items() if "_mc_" in k}
    print(f"after {args.epochs} epochs: eval_loss {metrics['eval_loss']:.3f}, {mc}")
    return metrics


if __name__ == "__main__":
    main()
