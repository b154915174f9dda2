-- Neovim config, linked by stead
vim.opt.number = true
