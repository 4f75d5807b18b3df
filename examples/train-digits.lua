-- A researcher's job script for `aicon run` (see the README's console section):
--   aicon run examples/train-digits.lua --connect A,B --data-dir CLIENT -- DIGITS.csv.gz
-- Puts the dataset on the data nodes, looks at its public preview, trains an
-- MLP on it on the trainer hosts and checks the held-out accuracy.
local file = assert(arg[1], "usage: aicon run train-digits.lua ... -- FILE")

print("hosts:")
for _, n in ipairs(nodes()) do
  print("  " .. n.id:sub(1, 8), n.address, table.concat(n.roles, ","))
end

local id = dataset.put(file, {name = "digits", standardize = true})
local d = dataset.preview(id)
print(("dataset %s: %d rows x %d features, %d classes"):format(id:sub(1, 16), d.rows, d.features, d.classes))
for _, row in ipairs(d.preview) do
  print(("  row %d label %d"):format(row.row, row.label))
end

-- Runs inside a host (its sandboxed "script" role), on every step of the
-- job; what it prints shows here after the host's id.
on("progress", function(p)
  if p.step % 100 == 0 then
    print(("step %d loss %.3f (handled at site %s)"):format(p.step, p.loss, site))
  end
end)

-- Trains on the stored dataset itself: the trainers fetch its shares from
-- the data nodes, and the keys are released to them under this console's
-- grant (it owns the dataset). Three trainers, spread over the trainer hosts.
local job = train{model = "mlp:64-64-10", dataset = id, trainers = 3, epochs = 7, batch = 32, lr = 0.05}
local m = job:wait{progress = true}
print(("held-out accuracy %.4f after %d steps (%.0f samples/s)"):format(m.accuracy, m.steps, m.samples_per_s))
assert(m.accuracy >= 0.95, "accuracy below 0.95")
