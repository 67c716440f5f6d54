"""nnU-Net v2's default trainer under a wall-clock budget, for bench/vs_nnunet.py.

Copied by the benchmark into the nnU-Net virtual environment it creates (nnU-Net finds
trainers by class name inside its own package). Everything but the stopping rule is
nnU-Net's default recipe: the plan, SGD with Nesterov, poly decay, deep supervision, its
augmentation and foreground oversampling. What changes:

- training stops when THRIFTY_BUDGET_MINUTES of wall-clock (over resumes) are spent, and
  the poly schedule is laid over the epochs that fit (re-estimated after every epoch);
- epochs are shorter (THRIFTY_ITERS_PER_EPOCH iterations, default 5, instead of 250) so
  that the estimate adapts, with 1 validation iteration (pseudo-Dice only), and an epoch
  ends early when the budget runs out (on CPU one iteration of the planned batch takes
  about a minute);
- one intra-op thread (nnU-Net sets all cores on CPU), a checkpoint every epoch (resume);
- THRIFTY_BATCH_SIZE, when set, replaces the planned batch size (a variant the benchmark
  reports under its own name; the default run keeps the plan's);
- the final validation on the training folds is skipped: the benchmark predicts the test
  cases itself with nnU-Net's predictor.
"""

import json
import math
import os
import time
from os.path import isfile, join

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_ThriftyBudget(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if os.environ.get("THRIFTY_BATCH_SIZE"):
            self.configuration_manager.configuration["batch_size"] = int(os.environ["THRIFTY_BATCH_SIZE"])
        self.budget_s = float(os.environ["THRIFTY_BUDGET_MINUTES"]) * 60.0
        self.num_iterations_per_epoch = int(os.environ.get("THRIFTY_ITERS_PER_EPOCH", "5"))
        self.num_val_iterations_per_epoch = 1
        self.iterations_done = 0
        self.save_every = 1
        torch.set_num_threads(int(os.environ.get("THRIFTY_THREADS", "1")))

    def _budget_path(self):
        return join(self.output_folder, "thrifty_budget.json")

    def _previous(self):
        """Seconds spent and iterations done by earlier attempts (resume with --c)."""
        if isfile(self._budget_path()):
            with open(self._budget_path()) as f:
                done = json.load(f)
            return float(done["spent_s"]), int(done.get("iterations_done", 0))
        return 0.0, 0

    def _record(self, spent, epoch_times):
        with open(self._budget_path() + ".tmp", "w") as f:
            json.dump({"spent_s": spent, "budget_s": self.budget_s, "epochs_done": self.current_epoch,
                       "iterations_per_epoch": self.num_iterations_per_epoch, "batch_size": self.batch_size,
                       "iterations_done": self.iterations_done,
                       "patch_size": list(self.configuration_manager.patch_size),
                       "mean_epoch_s": sum(epoch_times) / max(len(epoch_times), 1)}, f)
        os.replace(self._budget_path() + ".tmp", self._budget_path())

    def run_training(self):
        t0 = time.perf_counter()
        self.on_train_start()
        spent, self.iterations_done = self._previous()
        spent += time.perf_counter() - t0
        epoch_times = []
        while self.current_epoch < self.num_epochs and spent < self.budget_s:
            e0 = time.perf_counter()
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for _ in range(self.num_iterations_per_epoch):
                if train_outputs and spent + time.perf_counter() - e0 >= self.budget_s:
                    break
                train_outputs.append(self.train_step(next(self.dataloader_train)))
            self.iterations_done += len(train_outputs)
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()  # saves checkpoint_latest, increments current_epoch
            epoch_times.append(time.perf_counter() - e0)
            spent += epoch_times[-1]
            mean = sum(epoch_times) / len(epoch_times)
            fits = math.ceil(max(self.budget_s - spent, 0.0) / mean)  # the last one may end early
            self.num_epochs = self.current_epoch + fits
            self.lr_scheduler.max_steps = max(self.num_epochs, self.current_epoch + 1)
            self._record(spent, epoch_times)
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation skipped (the benchmark predicts its own test cases)")
