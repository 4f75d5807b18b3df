-- A researcher's own PyTorch model, end to end (README "Your own models"):
--   /usr/bin/python3 examples/models/make_models.py models/
--   aicon run examples/train-cnn.lua -- models/digits_cnn.pt tests/data/digits.csv.gz trained
-- Puts the TorchScript file on the data nodes as this console's model asset
-- (priced per job), the data set beside it, trains the model on it by their
-- ids with a budget (a job host runs it, the rater verifies it, the escrow
-- pays the trainers and the model's price), and saves the trained weights:
-- trained.pt, the TorchScript file the job host wrote (torch.jit.load reads
-- it), and trained.ckpt, aicon's checkpoint (weights and optimizer state).
local model_file = assert(arg[1], "usage: aicon run train-cnn.lua -- MODEL.pt DATA OUT")
local data_file, out = assert(arg[2]), assert(arg[3])

local model = model.put(model_file, {price = 7})
print("model " .. model)
-- The registration is final with the next block.
local owner
for _ = 1, 100 do
  local ok, o = pcall(asset.owner, model)
  if ok then owner = o break end
  sleep(0.1)
end
assert(owner == wallet.me(), "the model is not registered to this console: " .. tostring(owner))

local data = dataset.put(data_file, {name = "digits", standardize = true})
print("dataset " .. data)

local j = train{model = "torch:" .. model, dataset = data, trainers = 2, steps = 60, lr = 0.05,
                budget = 1000}
print("job " .. j.id)
local m = j:wait{progress = true}
print(("phase %s, %s, held-out accuracy %.4f, trainers paid %d, refunded %d, model price %d"):format(
  m.phase, m.verified, m.accuracy, m.paid, m.refunded, 1000 - m.paid - m.refunded))
print(("saved the weights of step %d to %s.ckpt"):format(j:save(out .. ".ckpt"), out))
print(("saved the trained model of step %d to %s.pt"):format(j:save(out .. ".pt"), out))
